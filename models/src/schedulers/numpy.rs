//! The few numpy routines diffusers' `set_timesteps` relies on, with numpy's exact arithmetic:
//! timesteps are rounded from these values, so an off-by-one-ulp emulation could move a timestep.

/// `numpy.arange(start, stop, step)` for float arguments: the length is ceil((stop - start) / step)
/// and element i is `start + i * delta`, where numpy's fill routine re-derives the increment as
/// `delta = (start + step) - start`.
pub(crate) fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len < 1.0 {
        return Vec::new();
    }
    let len = len as usize;
    let mut out = Vec::with_capacity(len);
    out.push(start);
    if len > 1 {
        let second = start + step;
        out.push(second);
        let delta = second - start;
        for i in 2..len {
            out.push(start + i as f64 * delta);
        }
    }
    out
}

/// `numpy.linspace(start, stop, num, endpoint)` in float64.
pub(crate) fn linspace(start: f64, stop: f64, num: usize, endpoint: bool) -> Vec<f64> {
    let div = if endpoint { num.saturating_sub(1) } else { num };
    let delta = stop - start;
    let mut out: Vec<f64> = if div > 0 {
        let step = delta / div as f64;
        if step == 0.0 {
            (0..num).map(|i| i as f64 / div as f64 * delta).collect()
        } else {
            (0..num).map(|i| i as f64 * step).collect()
        }
    } else {
        (0..num).map(|i| i as f64 * delta).collect()
    };
    for v in out.iter_mut() {
        *v += start;
    }
    if endpoint && num > 1 {
        out[num - 1] = stop;
    }
    out
}

/// `numpy.interp(x, arange(len(fp)), fp)`: linear interpolation on the integer grid, clamped to
/// the end values outside it.
pub(crate) fn interp_on_grid(x: f64, fp: &[f64]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0];
    }
    if x >= last as f64 {
        return fp[last];
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / 1.0;
    let r = slope * (x - j as f64) + fp[j];
    if r.is_nan() {
        let r2 = slope * (x - (j + 1) as f64) + fp[j + 1];
        if r2.is_nan() && fp[j] == fp[j + 1] {
            return fp[j];
        }
        return r2;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arange_counts_like_numpy() {
        assert_eq!(
            arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        for n in 1..60 {
            assert_eq!(arange(1000.0, 0.0, -(1000.0 / n as f64)).len(), n);
        }
        assert!(arange(0.0, 1.0, -1.0).is_empty());
    }

    #[test]
    fn linspace_endpoints() {
        assert_eq!(linspace(0.0, 1.0, 1, true), vec![0.0]);
        assert_eq!(
            linspace(0.0, 999.0, 4, true),
            vec![0.0, 333.0, 666.0, 999.0]
        );
        assert_eq!(linspace(0.0, 50.0, 4, false), vec![0.0, 12.5, 25.0, 37.5]);
    }

    #[test]
    fn interp_clamps_and_interpolates() {
        let fp = [1.0, 3.0, 7.0];
        assert_eq!(interp_on_grid(-1.0, &fp), 1.0);
        assert_eq!(interp_on_grid(1.5, &fp), 5.0);
        assert_eq!(interp_on_grid(9.0, &fp), 7.0);
    }
}
