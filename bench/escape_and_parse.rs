//! Micro-benchmarks of the two hot loops of the dump format (issue 20):
//! the JSON string escaper of a backup (`value.rs`) against serde_json, and
//! the dump-line parser of a restore (`archive/fast_line.rs`, with the
//! names of the previous line at hand, as `DumpReader` runs it) against the
//! full serde parser, on ASCII, accented and emoji text.
//!
//! cargo run --release --example escape_and_parse [-- ROUNDS]
//!
//! Each case runs the candidates in turn, ROUNDS times (default 7), over the
//! same strings; the best time of the rounds is reported (the least
//! disturbed by other processes) with its ratio to serde_json.

use std::hint::black_box;
use std::time::{Duration, Instant};
use tenant_kit::archive::dump::parse_line_with_serde;
use tenant_kit::archive::fast_line;
use tenant_kit::microbench::{escape_str, escape_text};

/// Texts of one kind: short (a name) to long (a description).
fn texts(kind: &str) -> Vec<String> {
    let unit = match kind {
        "ascii" => "Plan the quarterly review with the design team. ",
        "accented" => "Réunion trimestrielle: équipe déjà prête, café à côté. ",
        "emoji" => "Ship it 🚀 review 👀 done ✅ party 🎉 turtle 🐢 ",
        "mixed" => "Üser 42 🐢 naïve café — ship it 🚀 plain ascii here. ",
        _ => unreachable!(),
    };
    (0..64)
        .map(|i| unit.repeat(1 + i % 8) + &i.to_string())
        .collect()
}

/// Best time of `rounds` over one pass of `work`.
fn best(rounds: usize, mut work: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed()
        })
        .min()
        .unwrap()
}

const REPEAT: usize = 2_000;

fn escape_case(kind: &str, rounds: usize) {
    let texts = texts(kind);
    let bytes: usize = texts.iter().map(|t| t.len()).sum::<usize>() * REPEAT;
    let mut out = Vec::with_capacity(1 << 16);
    let mut run = |f: &mut dyn FnMut(&mut Vec<u8>, &String)| {
        best(rounds, || {
            for _ in 0..REPEAT {
                for t in &texts {
                    out.clear();
                    f(&mut out, t);
                    black_box(&out);
                }
            }
        })
    };
    let serde = run(&mut |out, t| serde_json::to_writer(out, t.as_str()).unwrap());
    let ours_str = run(&mut |out, t| escape_str(out, t));
    let serde_text = run(&mut |out, t| {
        let s = std::str::from_utf8(t.as_bytes()).unwrap();
        serde_json::to_writer(out, s).unwrap()
    });
    let ours_text = run(&mut |out, t| escape_text(out, t.as_bytes()));
    report("escape &str", kind, bytes, ours_str, serde);
    report(
        "escape TEXT (validated)",
        kind,
        bytes,
        ours_text,
        serde_text,
    );
}

fn parse_case(kind: &str, rounds: usize) {
    let lines: Vec<Vec<u8>> = texts(kind)
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut line = br#"{"table":"tasks","row":{"id":"#.to_vec();
            line.extend_from_slice(i.to_string().as_bytes());
            line.extend_from_slice(br#","tenant_id":1,"title":"#);
            escape_str(&mut line, t);
            line.extend_from_slice(br#","done":0,"estimate":2.5,"note":null}}"#);
            line
        })
        .collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum::<usize>() * REPEAT;
    for line in &lines {
        assert!(
            fast_line::parse(line).is_some(),
            "the fast path takes {kind} lines"
        );
    }
    let run = |f: &dyn Fn(&[u8])| {
        best(rounds, || {
            for _ in 0..REPEAT {
                for line in &lines {
                    f(line);
                }
            }
        })
    };
    let serde = run(&|l| {
        black_box(parse_line_with_serde(l, 1).unwrap());
    });
    // As DumpReader runs it: the previous line's names handed out again.
    let names = std::cell::RefCell::new(fast_line::Names::default());
    let fast = run(&|l| {
        black_box(fast_line::parse_with(l, &mut names.borrow_mut()).unwrap());
    });
    report("parse dump line", kind, bytes, fast, serde);
}

fn report(what: &str, kind: &str, bytes: usize, ours: Duration, serde: Duration) {
    let mib_s = |d: Duration| bytes as f64 / d.as_secs_f64() / (1 << 20) as f64;
    println!(
        "{what:<24} {kind:<9} ours {:>7.0} MiB/s  serde_json {:>7.0} MiB/s  ours/serde time {:.2}  ({:.2}x as fast)",
        mib_s(ours),
        mib_s(serde),
        ours.as_secs_f64() / serde.as_secs_f64(),
        serde.as_secs_f64() / ours.as_secs_f64(),
    );
}

fn main() {
    let rounds = std::env::args()
        .nth(1)
        .map(|r| r.parse().expect("ROUNDS: a number"))
        .unwrap_or(7);
    for kind in ["ascii", "accented", "emoji", "mixed"] {
        escape_case(kind, rounds);
    }
    for kind in ["ascii", "accented", "emoji", "mixed"] {
        parse_case(kind, rounds);
    }
}
