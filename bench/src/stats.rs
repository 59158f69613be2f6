//! Small statistics for the report: medians over rounds, and formatting.

/// The median of `xs` (the mean of the middle two for an even count);
/// NaN when empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The spread of `xs` as (min, max).
pub fn range(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .filter(|x| !x.is_nan())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The median of the ratios `a[k] / b[k]` of paired measurements (pairs
/// giving no finite ratio are skipped); NaN when there is none.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x / y)
        .filter(|r| r.is_finite())
        .collect();
    median(&ratios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
    }

    #[test]
    fn ranges_and_ratios() {
        assert_eq!(range(&[2.0, 7.0, 1.0]), (1.0, 7.0));
        // Per-pair ratios 2, 0.5 (skipped: 1/0) and 1.5: the median is 1.5,
        // unlike the ratio of the medians.
        assert_eq!(paired_ratio(&[2.0, 1.0, 1.0, 3.0], &[1.0, 2.0, 0.0, 2.0]), 1.5);
        assert!(paired_ratio(&[1.0], &[0.0]).is_nan());
    }
}
