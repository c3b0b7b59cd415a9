//! Reals as the integers modulo 2^64 that secure aggregation sums: `x` is `round(x · 2^f)` in
//! two's complement, with `f` fractional bits (`docs/algorithm-api.md`, "Reals").

/// A value that would not survive the sum.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error(
    "{value} with {frac_bits} fractional bits over {participants} participants may overflow the \
     sum (|x| · 2^f · n must stay below 2^63): use fewer fractional bits or scale the values down"
)]
pub struct Overflow {
    /// The value.
    pub value: f64,
    /// The fractional bits asked for.
    pub frac_bits: u32,
    /// Over how many participants.
    pub participants: usize,
}

/// `values` encoded with `frac_bits` fractional bits, checked so that a sum over `participants`
/// contributions of values like them cannot overflow.
pub fn encode(values: &[f64], frac_bits: u32, participants: usize) -> Result<Vec<u64>, Overflow> {
    let scale = 2f64.powi(frac_bits as i32);
    let bound = 2f64.powi(63) / participants.max(1) as f64;
    values
        .iter()
        .map(|&value| {
            let scaled = (value * scale).round();
            if !scaled.is_finite() || scaled.abs() >= bound {
                return Err(Overflow { value, frac_bits, participants });
            }
            Ok(scaled as i64 as u64)
        })
        .collect()
}

/// A sum of values encoded with `frac_bits` fractional bits, as reals.
pub fn decode(sum: &[u64], frac_bits: u32) -> Vec<f64> {
    let scale = 2f64.powi(frac_bits as i32);
    sum.iter().map(|&s| s as i64 as f64 / scale).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reals_sum_through_the_ring_of_integers() {
        let parts = [encode(&[1.5, -2.25], 20, 3).unwrap(), encode(&[-4.0, 0.125], 20, 3).unwrap()];
        let sum: Vec<u64> = (0..2).map(|i| parts[0][i].wrapping_add(parts[1][i])).collect();
        assert_eq!(decode(&sum, 20), vec![-2.5, -2.125]);
        assert_eq!(encode(&[7.0], 0, 2).unwrap(), vec![7]);
    }

    #[test]
    fn a_value_that_could_overflow_the_sum_is_refused() {
        assert!(encode(&[2f64.powi(40)], 22, 3).is_err());
        assert!(encode(&[2f64.powi(40)], 20, 3).is_ok());
        assert!(encode(&[f64::NAN], 0, 3).is_err());
    }
}
