//! The tar layer, written out by hand because archives are untrusted: we
//! accept exactly what we write (POSIX ustar headers, regular files, short
//! names, octal sizes) and nothing else — no PAX or GNU extension headers
//! that could redefine a name or a size, no links, devices or directories.
//!
//! Why not the `tar` crate (issue 20, measured with tests/tar_layer.rs)?
//! Used as strictly as it goes (`entries()?.raw(true)`, `as_ustar()`,
//! regular entries only, UTF-8 names), it refuses every tar-level hostile
//! input of the fuzz corpus just as this reader does. But on its own it is
//! more lenient in three ways, each a check we would keep on top: it reads
//! base-256 (binary) sizes, it ends the archive at the first zero block and
//! never looks at the second (nor at data after it), and it ignores bytes
//! after the NUL that ends a name. Its `Archive` owns the stream and pads
//! entries itself, while archive/read.rs streams one header at a time
//! through its size limits (manifest first, bounded entry sizes, nothing
//! after the end marker): switching means rebuilding that reader around
//! the crate for no gain in strictness. Speed is no reason to switch: on a
//! 120 MB dump (tar layer alone, no gzip, best of 5, release, two runs on
//! a loaded machine) reading took 38/19 ms here against 47/24 ms with the
//! crate, writing 321/140 ms against 391/177 ms; both are copies, and the
//! gzip layer around them costs seconds. On the write side our archive is three
//! deflate pieces stitched into one gzip member (archive/write.rs), which
//! the crate's `Builder` cannot produce; only its `Header::new_ustar()`
//! would replace [`write_header`]'s 20 lines. And keeping our own code
//! here keeps the `tar` crate independent: it builds every hostile test
//! archive (tests/hostile_archives.rs), so a misreading of the format in
//! this file cannot hide in tests written with the same misreading.

use crate::error::{Error, Result};
use std::io::{self, Read, Write};

pub const BLOCK: usize = 512;

/// Write one regular-file header for `name` of `size` bytes.
pub fn write_header<W: Write>(out: &mut W, name: &str, size: u64, mtime: u64) -> io::Result<()> {
    let mut h = [0u8; BLOCK];
    let bytes = name.as_bytes();
    assert!(bytes.len() <= 100, "entry names are short by construction");
    h[..bytes.len()].copy_from_slice(bytes);
    put_octal(&mut h[100..108], 0o600); // mode: customer data
    put_octal(&mut h[108..116], 0); // uid
    put_octal(&mut h[116..124], 0); // gid
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], mtime);
    h[156] = b'0'; // regular file
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put_octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    out.write_all(&h)
}

/// Zero padding after `size` bytes of content.
pub fn write_padding<W: Write>(out: &mut W, size: u64) -> io::Result<()> {
    let pad = padding(size);
    out.write_all(&[0u8; BLOCK][..pad])
}

/// The end-of-archive marker: two zero blocks.
pub fn write_end<W: Write>(out: &mut W) -> io::Result<()> {
    out.write_all(&[0u8; BLOCK * 2])
}

pub fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// One entry header as read from an untrusted archive.
#[derive(Debug)]
pub struct EntryHeader {
    pub name: String,
    pub size: u64,
}

/// Read the next header; `None` at the end-of-archive marker. Anything but a
/// plain ustar regular file is an `ArchiveError`.
pub fn read_header<R: Read>(input: &mut R) -> Result<Option<EntryHeader>> {
    let mut h = [0u8; BLOCK];
    read_block(input, &mut h)?;
    if h.iter().all(|&b| b == 0) {
        return end_marker(input).map(|()| None);
    }
    check_checksum(&h)?;
    if &h[257..263] != b"ustar\0" {
        return Err(Error::archive(
            "tar: not a POSIX ustar header (GNU and old formats are refused)",
        ));
    }
    let name = entry_name(&h)?;
    check_entry_type(h[156], &name)?;
    let size = parse_octal(&h[124..136])
        .ok_or_else(|| Error::archive(format!("tar: unreadable size of {name:?}")))?;
    Ok(Some(EntryHeader { name, size }))
}

/// The second zero block of the end-of-archive marker, after the first.
fn end_marker<R: Read>(input: &mut R) -> Result<()> {
    let mut second = [0u8; BLOCK];
    read_block(input, &mut second)?;
    if second.iter().any(|&b| b != 0) {
        return Err(Error::archive("tar: data after a zero block"));
    }
    Ok(())
}

/// The header's checksum: the sum of its bytes, the checksum field counted
/// as spaces.
fn check_checksum(h: &[u8; BLOCK]) -> Result<()> {
    let stored = parse_octal(&h[148..156])
        .ok_or_else(|| Error::archive("tar: unreadable header checksum"))?;
    let computed: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if stored != computed {
        return Err(Error::archive(
            "tar: header checksum mismatch (corrupt or not a tar archive)",
        ));
    }
    Ok(())
}

/// `prefix/name`, or `name` without a prefix.
fn entry_name(h: &[u8; BLOCK]) -> Result<String> {
    let name_field = cstr(&h[0..100])?;
    let prefix = cstr(&h[345..500])?;
    Ok(if prefix.is_empty() {
        name_field.to_string()
    } else {
        format!("{prefix}/{name_field}")
    })
}

/// Only regular files: every other type flag is refused by name.
fn check_entry_type(flag: u8, name: &str) -> Result<()> {
    let refused = match flag {
        b'0' | 0 => return Ok(()),
        b'1' => "hard link entry",
        b'2' => "symbolic link entry",
        b'3' | b'4' => "device entry",
        b'5' => "directory entry",
        b'6' => "FIFO entry",
        b'x' | b'g' => {
            return Err(Error::archive(format!(
                "tar: PAX extended header before {name:?} refused"
            )))
        }
        b'L' | b'K' => return Err(Error::archive("tar: GNU long name entry refused")),
        other => {
            return Err(Error::archive(format!(
                "tar: entry type {:?} of {name:?} refused",
                other as char
            )))
        }
    };
    Err(Error::archive(format!("tar: {refused} {name:?} refused")))
}

fn read_block<R: Read>(input: &mut R, block: &mut [u8; BLOCK]) -> Result<()> {
    input.read_exact(block).map_err(truncated)
}

/// I/O errors while reading the archive stream mean a broken archive.
pub fn truncated(err: io::Error) -> Error {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        Error::archive("archive is truncated")
    } else {
        Error::archive(format!("archive is unreadable: {err}"))
    }
}

fn cstr(field: &[u8]) -> Result<&str> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    if field[end..].iter().any(|&b| b != 0) {
        return Err(Error::archive("tar: garbage after a name"));
    }
    std::str::from_utf8(&field[..end]).map_err(|_| Error::archive("tar: entry name is not UTF-8"))
}

/// Octal number field; base-256 (binary) sizes are refused on purpose.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u64::from_str_radix(text, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_end_marker() {
        let mut buf = Vec::new();
        write_header(&mut buf, "blobs/abcd", 1234, 1_700_000_000).unwrap();
        buf.extend(std::iter::repeat_n(7u8, 1234));
        write_padding(&mut buf, 1234).unwrap();
        write_end(&mut buf).unwrap();
        let mut r = &buf[..];
        let h = read_header(&mut r).unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.size), ("blobs/abcd", 1234));
        let mut body = vec![0; 1234 + padding(1234)];
        r.read_exact(&mut body).unwrap();
        assert!(read_header(&mut r).unwrap().is_none());
    }

    #[test]
    fn refuses_links_and_bad_checksums() {
        let mut buf = Vec::new();
        write_header(&mut buf, "dump.jsonl", 0, 0).unwrap();
        let mut link = buf.clone();
        link[156] = b'2';
        // Fix the checksum so the type is what gets refused.
        link[148..156].copy_from_slice(b"        ");
        let sum: u32 = link.iter().map(|&b| u32::from(b)).sum();
        link[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let err = read_header(&mut &link[..]).unwrap_err();
        assert!(err.message().contains("symbolic link"), "{err}");
        buf[0] = b'X';
        assert!(read_header(&mut &buf[..])
            .unwrap_err()
            .message()
            .contains("checksum"));
    }
}
