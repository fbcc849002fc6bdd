//! UUIDs written as text, for tenant columns that hold them as 16 raw
//! bytes. Accepted: the dashed form (`0190a7c4-1b2c-7d3e-8f40-5162738495a6`),
//! the same 32 hex digits without dashes, and the 25-character base36 form
//! 37signals' Fizzy shows in URLs and in its models (the 128-bit number in
//! base36, zero-padded). Hex and base36 digits in either case.

/// The 16 bytes of a UUID written in one of the accepted forms.
pub fn parse(text: &str) -> Option<[u8; 16]> {
    match text.len() {
        36 => parse_dashed(text),
        32 => parse_hex(text),
        25 => parse_base36(text),
        _ => None,
    }
}

/// One UUID, written in each accepted form, for messages that show them.
pub const EXAMPLE: &str = "0190a7c4-1b2c-7d3e-8f40-5162738495a6";

/// `8-4-4-4-12` hex digits.
fn parse_dashed(text: &str) -> Option<[u8; 16]> {
    let dashes_in_place = text
        .char_indices()
        .all(|(i, c)| (c == '-') == matches!(i, 8 | 13 | 18 | 23));
    if !dashes_in_place {
        return None;
    }
    parse_hex(&text.replace('-', ""))
}

fn parse_hex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(text, 16).ok().map(u128::to_be_bytes)
}

fn parse_base36(text: &str) -> Option<[u8; 16]> {
    if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    // from_str_radix would also take a sign; the check above rules it out.
    u128::from_str_radix(text, 36).ok().map(u128::to_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::parse;

    const BYTES: [u8; 16] = [
        0x01, 0x90, 0xa7, 0xc4, 0x1b, 0x2c, 0x7d, 0x3e, 0x8f, 0x40, 0x51, 0x62, 0x73, 0x84, 0x95,
        0xa6,
    ];

    #[test]
    fn each_accepted_form_gives_the_same_bytes() {
        let base36 = format!("{:0>25}", to_base36(u128::from_be_bytes(BYTES)));
        for text in [
            "0190a7c4-1b2c-7d3e-8f40-5162738495a6",
            "0190A7C4-1B2C-7D3E-8F40-5162738495A6",
            "0190a7c41b2c7d3e8f405162738495a6",
            base36.as_str(),
            base36.to_uppercase().as_str(),
        ] {
            assert_eq!(parse(text), Some(BYTES), "{text}");
        }
        assert_eq!(parse("zzzzzzzzzzzzzzzzzzzzzzzzz"), None, "past 128 bits");
        assert_eq!(parse(&"f".repeat(32)), Some([0xff; 16]));
    }

    #[test]
    fn anything_else_is_no_uuid() {
        for bad in [
            "",
            "42",
            "0190a7c4-1b2c-7d3e-8f40-5162738495a",
            "0190a7c4-1b2c-7d3e-8f40-5162738495ag",
            "0190a7c41-b2c-7d3e-8f40-5162738495a6",
            "0190a7c4-1b2c-7d3e-8f40+5162738495a6",
            "+190a7c41b2c7d3e8f405162738495a6",
            "0190a7c41b2c7d3e8f405162738495ag",
            "+000000000000000000000001",
            "000000000000000000000000-",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    fn to_base36(mut n: u128) -> String {
        let mut digits = Vec::new();
        while n > 0 {
            digits.push(std::char::from_digit((n % 36) as u32, 36).unwrap());
            n /= 36;
        }
        digits.iter().rev().collect()
    }
}
