//! The flap history (DESIGN.md "State machine" point 5): the ok-ness of the
//! last [`FLAP_HISTORY_LEN`] applied results packed into the low bits of a
//! `u32`, and the Nagios-weighted percent of state changes over it.

/// Length of the ok-ness history used for flap detection.
pub const FLAP_HISTORY_LEN: u32 = 21;

/// The bits of a `u32` that hold the history.
const MASK: u32 = (1 << FLAP_HISTORY_LEN) - 1;

/// A history of only ok results: where every check starts, so a new check
/// does not look as if it had been flapping.
pub(crate) const ALL_OK: u32 = MASK;

/// Pushes the ok-ness of a newly applied result: it becomes bit 0 and the
/// oldest value falls off the top.
pub(crate) fn push(history: u32, ok: bool) -> u32 {
    ((history << 1) | u32::from(ok)) & MASK
}

/// The flapping percent of an ok-ness history (bit 0 newest, set = ok).
///
/// Each of the 20 adjacent pairs that differ counts with the Nagios weight
/// w(x) = 0.75 + (x - 1) * 0.5 / 19, x = 1 for the oldest pair up to 20 for
/// the newest, and the sum is scaled by 100 / 20: a change on every result is
/// 100 %, one change in the newest pair alone 6.25 %, in the oldest 3.75 %.
///
/// Bits above the history are ignored. The result is always in `[0, 100]`.
pub(crate) fn flap_percent(ok_history: u32) -> f64 {
    let h = ok_history & MASK;
    // Bit i of `changes` is set when results i and i + 1 differ; pair i is
    // x = 20 - i in the formula (bit 0 is the newest pair).
    let changes = (h ^ (h >> 1)) & ((1 << (FLAP_HISTORY_LEN - 1)) - 1);
    // Exact integer form: w(20 - i) * 76 = 95 - 2i, so the percent is
    // sum(95 - 2i) * 5 / 76. Integers keep the thresholds free of rounding
    // noise (e.g. exactly 30.0 must compare equal to flap_high 30).
    let mut weighted: u32 = 0;
    let mut rest = changes;
    while rest != 0 {
        let i = rest.trailing_zeros();
        weighted += 95 - 2 * i;
        rest &= rest - 1;
    }
    f64::from(weighted * 5) / 76.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a history from ok-ness values given oldest first.
    fn history(oks: &[bool]) -> u32 {
        oks.iter().fold(ALL_OK, |h, &ok| push(h, ok))
    }

    #[test]
    fn nagios_weights() {
        let alternating: Vec<bool> = (0..21).map(|i| i % 2 == 0).collect();
        let cases: &[(&str, u32, f64)] = &[
            ("all ok", ALL_OK, 0.0),
            ("all not ok", 0, 0.0),
            ("a change on every result", history(&alternating), 100.0),
            (
                "one change in the newest pair only",
                history(&[false]),
                6.25,
            ),
            // Only the oldest value differs from the 20 after it.
            (
                "one change in the oldest pair only",
                ALL_OK & !(1 << 20),
                3.75,
            ),
            (
                "second newest pair",
                history(&[false, true]),
                6.25 + 6.25 - 0.5 / 19.0 * 5.0,
            ),
            (
                "bits above the history are ignored",
                ALL_OK | 0xFFE0_0000,
                0.0,
            ),
        ];
        for (name, h, want) in cases {
            let got = flap_percent(*h);
            assert!(
                (got - want).abs() < 1e-9,
                "{name}: flap_percent({h:#x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn push_keeps_21_values() {
        assert_eq!(push(ALL_OK, true), ALL_OK);
        assert_eq!(push(ALL_OK, false), ALL_OK & !1);
        // 21 pushes of not-ok shift every ok value out.
        assert_eq!((0..21).fold(ALL_OK, |h, _| push(h, false)), 0);
        assert_eq!((0..20).fold(ALL_OK, |h, _| push(h, false)), 1 << 20);
    }
}
