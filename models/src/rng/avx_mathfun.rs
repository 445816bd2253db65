//! Scalar float32 versions of the vectorised `log` and `sincos` PyTorch's AVX2 normal kernel uses
//! (ATen's avx_mathfun.h: Cephes polynomials after J. Pommier's sse_mathfun), evaluated with the
//! same operations in the same order so the results agree bit for bit.
//!
//! PyTorch's x86 build compiles that header with FMA enabled and GCC fuses each multiply with the
//! add that consumes it; every `mul_add` below marks such a fused pair. Measured against
//! torch 2.15 on 16k-element draws: removing any of them changes some outputs by an ulp.

/// Coefficients of the Cephes `logf` polynomial (the header's decimal constants rounded to f32,
/// written in their shortest round-trip form).
const LOG_P: [f32; 9] = [
    0.070_376_836,
    -0.115_146_1,
    0.116_769_984,
    -0.124_201_41,
    0.142_493_23,
    -0.166_680_57,
    0.200_007_14,
    -0.249_999_94,
    0.333_333_3,
];
/// ln 2 split in a short exact part and a small correction.
const LN2_HI: f32 = 355.0 / 512.0;
const LN2_LO: f32 = -0.000_212_194_44;
const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// Natural log of a positive float, as `log256_ps` computes it.
pub fn log(x: f32) -> f32 {
    let invalid = x <= 0.0;
    // Denormals are cut to the smallest normal number, as the kernel does.
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    // Mantissa scaled into [0.5, 1).
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    // Recentre on 1: below sqrt(1/2) use 2m - 1 and one less in the exponent.
    let below = m < SQRT_HALF;
    let extra = if below { m } else { 0.0 };
    m -= 1.0;
    e -= if below { 1.0 } else { 0.0 };
    m += extra;

    let z = m * m;
    let mut y = LOG_P[0];
    for &p in &LOG_P[1..] {
        y = y.mul_add(m, p);
    }
    y *= m;
    y = y.mul_add(z, e * LN2_LO);
    y -= z * 0.5;
    let r = e.mul_add(LN2_HI, m + y);
    if invalid {
        f32::NAN
    } else {
        r
    }
}

const FOUR_OVER_PI: f32 = 1.273_239_5;
/// π/4 in three pieces for Cody-Waite argument reduction.
const DP1: f32 = -0.785_156_25;
const DP2: f32 = -0.000_241_875_65;
const DP3: f32 = -3.774_895e-8;
const SIN_P: [f32; 3] = [-0.000_195_152_96, 0.008_332_161, -0.166_666_55];
const COS_P: [f32; 3] = [2.443_315_7e-5, -0.001_388_731_6, 0.041_666_646];

/// (sin x, cos x), as `sincos256_ps` computes them.
pub fn sincos(x: f32) -> (f32, f32) {
    let mut sin_sign = x.to_bits() & 0x8000_0000;
    let ax = x.abs();
    // Octant index rounded up to even: selects the polynomial and the signs.
    let j = (((ax * FOUR_OVER_PI) as i32).wrapping_add(1)) & !1;
    let y = j as f32;
    sin_sign ^= ((j & 4) as u32) << 29;
    let use_sin_poly = j & 2 == 0;
    let cos_sign = ((!(j.wrapping_sub(2)) & 4) as u32) << 29;

    let mut r = y.mul_add(DP1, ax);
    r = y.mul_add(DP2, r);
    r = y.mul_add(DP3, r);
    let z = r * r;

    let mut c = COS_P[0].mul_add(z, COS_P[1]);
    c = c.mul_add(z, COS_P[2]);
    c *= z;
    c = c.mul_add(z, -(z * 0.5));
    c += 1.0;

    let mut s = SIN_P[0].mul_add(z, SIN_P[1]);
    s = s.mul_add(z, SIN_P[2]);
    s *= z;
    s = s.mul_add(r, r);

    let (sin, cos) = if use_sin_poly { (s, c) } else { (c, s) };
    (
        f32::from_bits(sin.to_bits() ^ sin_sign),
        f32::from_bits(cos.to_bits() ^ cos_sign),
    )
}
