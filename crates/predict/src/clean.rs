//! Preparing a series: missing samples interpolated, isolated outliers replaced.

/// Linear interpolation over missing samples; leading and trailing gaps take the nearest known
/// value. `None` when no sample is known.
pub fn interpolate(samples: &[Option<f64>]) -> Option<Vec<f64>> {
    let known: Vec<(usize, f64)> = samples
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.filter(|x| x.is_finite()).map(|x| (i, x)))
        .collect();
    let (&(first_i, first_v), &(last_i, last_v)) = (known.first()?, known.last()?);
    let mut out = vec![0.0; samples.len()];
    for v in out.iter_mut().take(first_i) {
        *v = first_v;
    }
    for w in known.windows(2) {
        let ((a, va), (b, vb)) = (w[0], w[1]);
        for (i, v) in out.iter_mut().enumerate().take(b + 1).skip(a) {
            let t = (i - a) as f64 / (b - a) as f64;
            *v = va + (vb - va) * t;
        }
    }
    if known.len() == 1 {
        out[first_i] = first_v;
    }
    for v in out.iter_mut().skip(last_i + 1) {
        *v = last_v;
    }
    Some(out)
}

/// The median of `v` (sorted in place); 0 for an empty slice.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// The `q` quantile (0..=1) of `v` (sorted in place), linear between order statistics; 0 for
/// an empty slice.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Hampel filter: a sample further than `k` scaled MADs from the median of the `half`
/// samples either side is replaced by that median. Runs of outliers longer than `half` are
/// kept: they are load, not glitches.
pub fn hampel(x: &[f64], half: usize, k: f64) -> Vec<f64> {
    let mut out = x.to_vec();
    let mut win = Vec::with_capacity(2 * half + 1);
    for i in 0..x.len() {
        let (lo, hi) = (i.saturating_sub(half), (i + half + 1).min(x.len()));
        win.clear();
        win.extend_from_slice(&x[lo..hi]);
        let med = median(&mut win);
        for w in win.iter_mut() {
            *w = (*w - med).abs();
        }
        let mad = 1.4826 * median(&mut win);
        if mad > 0.0 && (x[i] - med).abs() > k * mad {
            out[i] = med;
        }
    }
    out
}

/// [`interpolate`] then [`hampel`] with a half-window of 7 samples and k = 5.
pub fn clean(samples: &[Option<f64>]) -> Option<Vec<f64>> {
    Some(hampel(&interpolate(samples)?, 7, 5.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_interpolated_and_ends_held() {
        let v = interpolate(&[None, Some(1.0), None, None, Some(4.0), None]).unwrap();
        assert_eq!(v, [1.0, 1.0, 2.0, 3.0, 4.0, 4.0]);
        assert!(interpolate(&[None, None]).is_none());
    }

    #[test]
    fn isolated_spikes_go_and_plateaus_stay() {
        let mut x: Vec<f64> = (0..40).map(|i| 10.0 + f64::from(i % 3)).collect();
        x[20] = 500.0;
        for v in x.iter_mut().skip(30) {
            *v = 100.0;
        }
        let y = hampel(&x, 3, 5.0);
        assert!(y[20] < 20.0, "the spike is replaced: {}", y[20]);
        assert_eq!(y[35], 100.0, "a plateau is load");
    }

    #[test]
    fn quantiles_interpolate() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&mut v, 0.5), 2.5);
        assert_eq!(quantile(&mut v, 1.0), 4.0);
    }
}
