//! The epoch record ([design §2.2](crate::design#22-the-state-file)): how a
//! session's last fencing epoch is written in its state file
//! (`<session>.epoch`), and how such bytes are read back.
//!
//! The record is the epoch as exactly [`RECORD_LEN`]` - 1` decimal digits
//! (zero-padded) and `\n`: fixed width, so that a write at offset 0 covers
//! any earlier record completely (the writer then cuts the file to the
//! record's length). [`parse`] is strict: anything but
//! one record (at most 20 digits, an optional final `\n`, nothing else) is
//! not a record, and the caller must treat the file as one that cannot say
//! which epochs were used (see `backend::file`). Pure functions, no I/O: the
//! fuzz target calls [`parse`] on arbitrary bytes.

/// Length of a record as [`format()`] writes it: 20 digits and `\n`.
pub const RECORD_LEN: usize = 21;

/// The most digits a record may have (`u64::MAX` has 20).
const MAX_DIGITS: usize = 20;

/// Parses a state file's whole content. `Some(epoch)` only for one record:
/// 1 to 20 ASCII digits whose value fits a `u64`, optionally followed by one
/// `\n`. Empty input, extra bytes (after the record or before it), signs,
/// white space other than the final `\n`, and values above `u64::MAX` all
/// give `None`. Never panics, never allocates.
pub fn parse(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if digits.is_empty() || digits.len() > MAX_DIGITS {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The record for `epoch`: 20 zero-padded digits and `\n`.
pub fn format(epoch: u64) -> [u8; RECORD_LEN] {
    let mut out = [b'0'; RECORD_LEN];
    out[RECORD_LEN - 1] = b'\n';
    let mut n = epoch;
    for slot in out[..RECORD_LEN - 1].iter_mut().rev() {
        // `n % 10` is below 10: the cast cannot truncate.
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_fixed_width_records() {
        assert_eq!(&format(0), b"00000000000000000000\n");
        assert_eq!(&format(42), b"00000000000000000042\n");
        assert_eq!(&format(u64::MAX), b"18446744073709551615\n");
    }

    #[test]
    fn parses_records_and_hand_written_numbers() {
        assert_eq!(parse(b"00000000000000000042\n"), Some(42));
        assert_eq!(parse(b"00000000000000000042"), Some(42));
        assert_eq!(parse(b"7\n"), Some(7));
        assert_eq!(parse(b"18446744073709551615\n"), Some(u64::MAX));
    }

    // Issue 9 item 4: a record followed by anything is not a record; the
    // caller must not trust a prefix of a file it did not write whole.
    #[test]
    fn rejects_everything_but_one_record() {
        for bad in [
            &b""[..],
            b"\n",
            b"00000000000000000042\ngarbage",
            b"00000000000000000042\n\n",
            b"00000000000000000042\n00000000000000000041\n",
            b" 42\n",
            b"42 \n",
            b"+42",
            b"-1",
            b"4 2",
            b"18446744073709551616\n",
            b"000000000000000000042\n",
            b"\xff\xfe",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn round_trips(epoch in any::<u64>()) {
            prop_assert_eq!(parse(&format(epoch)), Some(epoch));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&bytes);
        }
    }
}
