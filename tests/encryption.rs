//! Encrypted archives (age format): round trips with recipients and with a
//! passphrase, the errors of missing, wrong and mismatched keys, tampered
//! and truncated ciphertext (database and storage byte-identical after),
//! no plaintext on disk while a backup runs, no secret in any message, and
//! interoperability with Debian's `age` command line tool.

mod common;

use age::secrecy::ExposeSecret;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tenant_kit::progress::CollectProgress;
use tenant_kit::{Error, ErrorKind};

const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// A passphrase used only by these tests; every message is checked for it.
const PASSPHRASE: &str = "correct horse battery staple 4711";

struct Key {
    identity: String,
    recipient: String,
}

fn new_key() -> Key {
    let pair = tenant_kit::crypt::keys::generate_key();
    Key {
        identity: pair.identity,
        recipient: pair.recipient,
    }
}

fn backup_with(
    app: &App,
    tenant: i64,
    extra: Value,
) -> tenant_kit::Result<tenant_kit::backup::BackupReport> {
    let mut options = json!({
        "database": app.db, "tenant_id": tenant, "output_dir": app.out, "storage_root": app.storage,
    });
    for (k, v) in extra.as_object().unwrap() {
        options[k] = v.clone();
    }
    let options: tenant_kit::backup::BackupOptions = serde_json::from_value(options).unwrap();
    tenant_kit::backup::backup(&options, &mut CollectProgress::default())
}

/// Decrypt with the age crate (not our reader) to the plain `.tar.gz`.
fn decrypt_with_identity(path: &Path, identity: &str) -> Vec<u8> {
    let id: age::x25519::Identity = identity.parse().unwrap();
    let file = std::fs::read(path).unwrap();
    let decryptor = age::Decryptor::new(&file[..]).unwrap();
    let mut reader = decryptor
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}

/// Encrypt `plain` to `recipient` with the age crate.
fn encrypt_to(plain: &[u8], recipient: &str) -> Vec<u8> {
    let r: age::x25519::Recipient = recipient.parse().unwrap();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
    let mut out = Vec::new();
    let mut w = encryptor.wrap_output(&mut out).unwrap();
    w.write_all(plain).unwrap();
    w.finish().unwrap();
    out
}

fn entry_names(tar_gz: &[u8]) -> Vec<String> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
    tar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_str().unwrap().to_string())
        .collect()
}

/// Restore that must fail, leaving the database and storage as they were.
fn refused(app: &App, archive: &Path, keys: Value) -> Error {
    let before = (app.snapshot(), app.storage_files());
    for dry_run in [true, false] {
        let mut extra = keys.clone();
        extra["purge"] = json!(true);
        extra["dry_run"] = json!(dry_run);
        let err = app.restore(archive, 1, extra).unwrap_err();
        assert_eq!((app.snapshot(), app.storage_files()), before, "{err:?}");
        if !dry_run {
            return err;
        }
    }
    unreachable!()
}

fn verify_with(
    archive: &Path,
    keys: Value,
) -> tenant_kit::Result<tenant_kit::verify::VerifyReport> {
    let mut options = json!({ "archive": archive });
    for (k, v) in keys.as_object().unwrap() {
        options[k] = v.clone();
    }
    let options: tenant_kit::verify::VerifyOptions = serde_json::from_value(options).unwrap();
    tenant_kit::verify::verify(&options, &mut CollectProgress::default())
}

/// Change tenant 1's data so a restore has something to put back.
fn damage_tenant_1(app: &App) {
    app.conn()
        .execute("UPDATE tasks SET title = 'changed' WHERE tenant_id = 1", [])
        .unwrap();
}

#[test]
fn recipients_backup_is_age_with_the_plain_archive_inside_and_restores() {
    let app = App::new();
    let (main, recovery) = (new_key(), new_key());
    let report = backup_with(
        &app,
        1,
        json!({ "recipients": [main.recipient, recovery.recipient] }),
    )
    .unwrap();
    let name = report
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        name.starts_with("tenant_1_") && name.ends_with(".tar.gz.age"),
        "{name}"
    );
    assert!(report.encrypted);
    assert_eq!(
        report.recipients,
        vec![main.recipient.clone(), recovery.recipient.clone()]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&report.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let bytes = std::fs::read(&report.path).unwrap();
    assert!(bytes.starts_with(AGE_MAGIC));
    assert_eq!(report.bytes, bytes.len() as u64);
    // The recovery key opens it too, and inside is the version-1 .tar.gz.
    let plain = decrypt_with_identity(&report.path, &recovery.identity);
    let names = entry_names(&plain);
    assert_eq!(names[..2], ["manifest.json", "dump.jsonl"]);
    // Nothing else is left in the output dir (no spool, no temp archive).
    let left: Vec<_> = std::fs::read_dir(&app.out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, vec![report.path.clone()]);

    let expected = app.snapshot();
    damage_tenant_1(&app);
    let restored = app
        .restore(
            &report.path,
            1,
            json!({ "purge": true, "identities": [main.identity] }),
        )
        .unwrap();
    assert!(restored.encrypted);
    assert_eq!(app.snapshot(), expected);
    let verified = verify_with(&report.path, json!({ "identities": [recovery.identity] })).unwrap();
    assert!(verified.encrypted);
    assert_eq!(verified.rows, report.rows);
}

#[test]
fn identity_file_in_age_key_file_format_opens_the_archive() {
    let app = App::new();
    let key = new_key();
    let report = backup_with(&app, 1, json!({ "recipients": [key.recipient] })).unwrap();
    let file = app.dir.path().join("key.txt");
    let other = new_key();
    std::fs::write(
        &file,
        format!(
            "# created: today\n# public key: {}\n{}\n{}\n",
            key.recipient, other.identity, key.identity
        ),
    )
    .unwrap();
    let verified = verify_with(&report.path, json!({ "identity_file": file })).unwrap();
    assert!(verified.encrypted);
}

#[test]
fn passphrase_backup_restores_with_it_and_refuses_a_wrong_one() {
    let app = App::new();
    let report = backup_with(&app, 1, json!({ "passphrase": PASSPHRASE })).unwrap();
    assert!(report.encrypted);
    assert!(report.recipients.is_empty());
    let bytes = std::fs::read(&report.path).unwrap();
    // age's scrypt stanza, at the default work factor (18), not lowered.
    let header = String::from_utf8_lossy(&bytes[..100]).to_string();
    assert!(
        header.contains("-> scrypt ") && header.lines().nth(1).unwrap().ends_with(" 18"),
        "{header}"
    );

    let err = refused(
        &app,
        &report.path,
        json!({ "passphrase": "not the passphrase" }),
    );
    assert_eq!(err.kind(), ErrorKind::Decryption, "{err:?}");
    assert!(err.message().contains("passphrase is wrong"), "{err:?}");
    assert!(!err.message().contains("not the passphrase"));

    let err = refused(
        &app,
        &report.path,
        json!({ "identities": [new_key().identity] }),
    );
    assert_eq!(err.kind(), ErrorKind::Decryption, "{err:?}");
    assert!(
        err.message().contains("encrypted with a passphrase"),
        "{err:?}"
    );

    let expected = app.snapshot();
    damage_tenant_1(&app);
    let restored = app
        .restore(
            &report.path,
            1,
            json!({ "purge": true, "passphrase": PASSPHRASE }),
        )
        .unwrap();
    assert!(restored.encrypted);
    assert_eq!(app.snapshot(), expected);
}

#[test]
fn encrypted_archive_without_a_key_asks_for_one() {
    let app = App::new();
    let report = backup_with(&app, 1, json!({ "recipients": [new_key().recipient] })).unwrap();
    let err = refused(&app, &report.path, json!({}));
    assert_eq!(err.kind(), ErrorKind::Argument, "{err:?}");
    assert!(err.message().contains("a key is needed"), "{err:?}");
    let err = verify_with(&report.path, json!({})).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Argument, "{err:?}");
}

#[test]
fn an_identity_that_is_not_a_recipient_is_a_decryption_error() {
    let app = App::new();
    let report = backup_with(&app, 1, json!({ "recipients": [new_key().recipient] })).unwrap();
    let stranger = new_key();
    let err = refused(
        &app,
        &report.path,
        json!({ "identities": [stranger.identity] }),
    );
    assert_eq!(err.kind(), ErrorKind::Decryption, "{err:?}");
    assert!(
        err.message().contains("none of the given identities"),
        "{err:?}"
    );
    let err = refused(&app, &report.path, json!({ "passphrase": PASSPHRASE }));
    assert_eq!(err.kind(), ErrorKind::Decryption, "{err:?}");
    assert!(err.message().contains("not a passphrase"), "{err:?}");
}

/// Where in an age file a byte is changed.
fn header_end(bytes: &[u8]) -> usize {
    let mac = bytes.windows(4).position(|w| w == b"\n---").unwrap() + 1;
    mac + bytes[mac..].iter().position(|&b| b == b'\n').unwrap() + 1
}

#[test]
fn tampered_or_truncated_ciphertext_is_an_integrity_error_and_changes_nothing() {
    let app = App::new();
    // Incompressible blob content: the payload spans several 64 KiB chunks.
    let mut noise = vec![0u8; 300_000];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for b in noise.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    app.write_blob(&app.conn(), 1500, &blob_key(1, 50), &noise);
    app.conn()
        .execute("INSERT INTO active_storage_attachments(id, name, record_type, record_id, blob_id, created_at) VALUES (1500, 'files', 'Task', 1001, 1500, 'x')", [])
        .unwrap();
    let key = new_key();
    let report = backup_with(&app, 1, json!({ "recipients": [key.recipient] })).unwrap();
    let good = std::fs::read(&report.path).unwrap();
    let body = header_end(&good) + 16; // after the header and the payload nonce
    assert!(good.len() - body > 3 * 65_536, "payload of several chunks");
    let keys = json!({ "identities": [key.identity] });

    let mac_line = body - 16 - 10; // a character of the header's MAC
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("flipped header MAC", flip(&good, mac_line), "header"),
        (
            "flipped first chunk",
            flip(&good, body + 100),
            "does not authenticate",
        ),
        (
            "flipped last chunk",
            flip(&good, good.len() - 5),
            "does not authenticate",
        ),
        (
            "cut in the last chunk",
            good[..good.len() - 40].to_vec(),
            "does not authenticate",
        ),
        (
            "cut at a chunk boundary",
            good[..body + 65_552].to_vec(),
            "does not authenticate",
        ),
        ("cut in the header", good[..mac_line].to_vec(), "header"),
    ];
    let bad = app.dir.path().join("bad.tar.gz.age");
    for (case, bytes, says) in cases {
        std::fs::write(&bad, &bytes).unwrap();
        let err = refused(&app, &bad, keys.clone());
        assert_eq!(err.kind(), ErrorKind::Integrity, "{case}: {err:?}");
        assert!(err.message().contains(says), "{case}: {err:?}");
        let err = verify_with(&bad, keys.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{case}: verify: {err:?}");
    }
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x01;
    out
}

#[test]
fn an_age_file_holding_a_hostile_archive_is_refused_like_the_plain_one() {
    let app = App::new();
    let plain = app.backup(1).path;
    let mut edited = EditableArchive::open(&plain);
    // A row of tenant 2 smuggled into tenant 1's archive.
    edited.edit_rows("tasks", |row| row["tenant_id"] = json!(2));
    let hostile = app.dir.path().join("hostile.tar.gz");
    edited.write(&hostile);
    let plain_err = refused(&app, &hostile, json!({}));

    let key = new_key();
    let sealed = app.dir.path().join("hostile.tar.gz.age");
    std::fs::write(
        &sealed,
        encrypt_to(&std::fs::read(&hostile).unwrap(), &key.recipient),
    )
    .unwrap();
    let err = refused(&app, &sealed, json!({ "identities": [key.identity] }));
    assert_eq!(err.kind(), plain_err.kind(), "{err:?}");
    assert_eq!(err.message(), plain_err.message());
}

#[test]
fn a_plain_archive_given_a_key_still_restores_and_says_it_was_not_encrypted() {
    let app = App::new();
    let report = app.backup(1);
    let expected = app.snapshot();
    damage_tenant_1(&app);
    let restored = app
        .restore(
            &report.path,
            1,
            json!({ "purge": true, "identities": [new_key().identity] }),
        )
        .unwrap();
    assert!(!restored.encrypted);
    assert_eq!(app.snapshot(), expected);
}

/// Every file below `dir`, at every progress event of an encrypted backup:
/// none may hold plaintext. Compression level 0 stores the dump as it is,
/// so a plaintext spool or temp archive would show the rows' text.
#[test]
fn no_plaintext_reaches_the_disk_while_an_encrypted_backup_runs() {
    let app = App::new();
    let options: tenant_kit::backup::BackupOptions = serde_json::from_value(json!({
        "database": app.db, "tenant_id": 1, "output_dir": app.out, "storage_root": app.storage,
        "compression_level": 0, "recipients": [new_key().recipient],
    }))
    .unwrap();
    let out = app.out.clone();
    let mut looked = 0;
    let mut check = |event: tenant_kit::Event| -> tenant_kit::Result<()> {
        for (path, bytes) in files_below(&out) {
            looked += 1;
            for plain in [
                &b"u1@t1.example"[..],
                b"file 1 of tenant 1",
                b"manifest.json",
            ] {
                assert!(
                    !bytes.windows(plain.len()).any(|w| w == plain),
                    "{} holds plaintext at {}",
                    path.display(),
                    event.to_json()
                );
            }
        }
        Ok(())
    };
    tenant_kit::backup::backup(&options, &mut check).unwrap();
    assert!(looked > 3, "the work dir's files were seen");
}

#[test]
fn secrets_never_appear_in_events_results_errors_or_debug_output() {
    let app = App::new();
    let key = new_key();
    let mut events = CollectProgress::default();
    let options: tenant_kit::backup::BackupOptions = serde_json::from_value(json!({
        "database": app.db, "tenant_id": 1, "output_dir": app.out, "passphrase": PASSPHRASE,
    }))
    .unwrap();
    assert!(!format!("{options:?}").contains(PASSPHRASE));
    let report = tenant_kit::backup::backup(&options, &mut events).unwrap();
    let mut seen = vec![
        serde_json::to_string(&report).unwrap(),
        format!("{report:?}"),
    ];
    seen.extend(events.events.iter().map(|e| e.to_json()));

    let restore = app.restore_options(
        &report.path,
        1,
        json!({ "identities": key.identity, "passphrase": PASSPHRASE }),
    );
    seen.push(format!("{restore:?}"));
    seen.push(format!("{:?}", tenant_kit::crypt::keys::generate_key()));
    // Mistakes must not echo the value either.
    let json_err = tenant_kit::api::restore_json(
        &json!({ "database": app.db, "archive": report.path, "tenant_id": 1, "identities": { "x": key.identity } }).to_string(),
        &mut tenant_kit::NoProgress,
    );
    seen.push(format!("{json_err:?}"));
    for bad in [
        json!({ "recipients": [key.identity] }),
        json!({ "recipients": [key.recipient], "passphrase": PASSPHRASE }),
        json!({ "passphrase": "" }),
    ] {
        let err = backup_with(&app, 1, bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Argument, "{err:?}");
        seen.push(err.message().to_string());
    }
    let err = app
        .restore(
            &report.path,
            1,
            json!({ "identities": ["AGE-SECRET-KEY-1NOTAKEY"] }),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Argument, "{err:?}");
    seen.push(err.message().to_string());
    for text in &seen {
        assert!(!text.contains(PASSPHRASE), "{text}");
        assert!(!text.contains(&key.identity), "{text}");
        assert!(!text.contains("NOTAKEY"), "{text}");
    }
}

#[test]
fn prune_counts_encrypted_archives() {
    let app = App::new();
    let key = new_key();
    let first = backup_with(&app, 1, json!({ "recipients": [key.recipient] })).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = app.backup(1);
    let options: tenant_kit::prune::PruneOptions =
        serde_json::from_value(json!({ "output_dir": app.out, "keep_last": 1 })).unwrap();
    let pruned = tenant_kit::prune::prune(&options).unwrap();
    assert_eq!(pruned.deleted, vec![first.path]);
    assert_eq!(pruned.kept, vec![second.path]);
}

// ---- interoperability with Debian's `age` command (script/setup) ----

/// The `age` binary, or None (then the interop tests say so and pass,
/// except in CI, which installs it through script/setup).
fn age_cli() -> Option<PathBuf> {
    let found = Command::new("age")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the age CLI (script/setup)"
        );
        eprintln!("SKIPPED: no `age` on PATH (Debian package age; script/setup installs it)");
        return None;
    }
    Some(PathBuf::from("age"))
}

#[test]
fn our_archive_decrypts_with_the_age_cli_to_a_tar_gz_tar_lists() {
    let Some(age) = age_cli() else { return };
    let app = App::new();
    let key = new_key();
    let report = backup_with(&app, 1, json!({ "recipients": [key.recipient] })).unwrap();
    let key_file = app.dir.path().join("key.txt");
    std::fs::write(&key_file, format!("{}\n", key.identity)).unwrap();
    let plain = app.dir.path().join("plain.tar.gz");
    let status = Command::new(&age)
        .args(["-d", "-i"])
        .arg(&key_file)
        .arg("-o")
        .arg(&plain)
        .arg(&report.path)
        .status()
        .unwrap();
    assert!(status.success());
    let listing = Command::new("tar").arg("tzf").arg(&plain).output().unwrap();
    assert!(listing.status.success());
    let names = String::from_utf8(listing.stdout).unwrap();
    assert!(
        names.starts_with("manifest.json\ndump.jsonl\nblobs/"),
        "{names}"
    );
}

#[test]
fn an_archive_encrypted_by_the_age_cli_to_a_recipient_restores() {
    let Some(age) = age_cli() else { return };
    let app = App::new();
    let plain = app.backup(1).path;
    let key = new_key();
    let sealed = app.dir.path().join("cli.tar.gz.age");
    let status = Command::new(&age)
        .arg("-r")
        .arg(&key.recipient)
        .arg("-o")
        .arg(&sealed)
        .arg(&plain)
        .status()
        .unwrap();
    assert!(status.success());
    let expected = app.snapshot();
    damage_tenant_1(&app);
    let restored = app
        .restore(
            &sealed,
            1,
            json!({ "purge": true, "identities": [key.identity] }),
        )
        .unwrap();
    assert!(restored.encrypted);
    assert_eq!(app.snapshot(), expected);
}

/// The CLI reads a passphrase from the terminal only: `script` gives it a
/// pseudo-terminal, and the passphrase (twice: entry and confirmation)
/// goes in through it.
#[test]
fn an_archive_encrypted_by_the_age_cli_with_a_passphrase_restores() {
    let Some(_) = age_cli() else { return };
    let app = App::new();
    let plain = app.backup(1).path;
    let sealed = app.dir.path().join("cli-pass.tar.gz.age");
    let command = format!("age -p -o '{}' '{}'", sealed.display(), plain.display());
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("script(1) from util-linux");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSPHRASE}\n{PASSPHRASE}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(std::fs::read(&sealed).unwrap().starts_with(AGE_MAGIC));
    let expected = app.snapshot();
    damage_tenant_1(&app);
    let restored = app
        .restore(
            &sealed,
            1,
            json!({ "purge": true, "passphrase": PASSPHRASE }),
        )
        .unwrap();
    assert!(restored.encrypted);
    assert_eq!(app.snapshot(), expected);
}

#[test]
fn generated_keys_work_with_the_age_crate() {
    let pair = tenant_kit::crypt::keys::generate_key();
    let id: age::x25519::Identity = pair.identity.parse().unwrap();
    assert_eq!(id.to_public().to_string(), pair.recipient);
    assert!(id
        .to_string()
        .expose_secret()
        .starts_with("AGE-SECRET-KEY-1"));
}
