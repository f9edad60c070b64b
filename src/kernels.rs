//! Dot-product kernels for the index scans, written so that LLVM vectorises them
//! (independent partial sums). The f32 and f64 row loops are compiled twice by `multiversion`:
//! for the baseline target and for AVX2+FMA, chosen at run time by CPU feature detection; the
//! f16 and int8 ones use intrinsics on such CPUs (module `x86`) and portable loops elsewhere.

use std::ops::Range;

use multiversion::multiversion;

use crate::int_kernels::TokenTerms;

/// `Σ_i a_i b_i` in f64 over f32 × f64 (exact products, f64 sums): the exact scoring pass.
#[inline]
pub fn dot_exact(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += f64::from(x[i]) * y[i];
        }
    }
    let tail: f64 = ar.iter().zip(br).map(|(&x, &y)| f64::from(x) * y).sum();
    acc.iter().sum::<f64>() + tail
}

/// `Σ_i a_i b_i` in f32 with 32 independent partial sums (4 AVX registers); its rounding error is within the
/// `γ_d` bound of recursive summation that the ranking pass's proof uses.
#[inline(always)] // so that the AVX2 clones of the row loops inline it
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 32];
    let (ac, bc) = (a.chunks_exact(32), b.chunks_exact(32));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..32 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ_i a_i b_i` over int8 × f32 (the int8 row's scale applied by the caller).
#[inline(always)]
pub fn dot_i8(a: &[i8], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] += f32::from(x[i]) * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(&x, y)| f32::from(x) * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `out[i*L + l] = dot(k, row_k, cols[l])` for the rows `k` of `values` (rows of `d`): the loop
/// shared by the storage types, inlined into each multiversioned clone. `prefetch` asks for
/// the rows [`PREFETCH_AHEAD`](crate::int_kernels::PREFETCH_AHEAD) bytes on: it speeds up the
/// f16 and int8 rows, whose conversions leave the hardware prefetcher behind, and slowed the
/// f32 rows (60–74 % of the read instead of 82–98 %).
#[inline(always)]
fn dot_rows<T>(
    values: &[T],
    rows: Range<usize>,
    d: usize,
    cols: &[&[f32]],
    out: &mut [f32],
    (prefetch, dot): (bool, impl Fn(usize, &[T], &[f32]) -> f32),
) {
    let l = cols.len();
    for (i, k) in rows.enumerate() {
        let row = &values[k * d..(k + 1) * d];
        if prefetch {
            crate::int_kernels::prefetch_ahead(row.as_ptr().cast(), std::mem::size_of_val(row));
        }
        for (j, col) in cols.iter().enumerate() {
            out[i * l + j] = dot(k, row, col);
        }
    }
}

/// `out[i*L + l] = row_{start+i} · cols[l]` over an f32 matrix (`values`, rows of `d`): with
/// AVX-512 F for 1–8 columns when the CPU has it (`x86::dot_rows_f32_avx512`), else the
/// portable loop.
pub fn dot_rows_f32(
    values: &[f32],
    rows: Range<usize>,
    d: usize,
    cols: &[&[f32]],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if x86::dot_rows_f32_avx512(values, rows.clone(), d, cols, out) {
        return;
    }
    dot_rows_f32_portable(values, rows, d, cols, out);
}

/// [`dot_rows_f32`] without AVX-512 (multiversioned for AVX2).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn dot_rows_f32_portable(
    values: &[f32],
    rows: Range<usize>,
    d: usize,
    cols: &[&[f32]],
    out: &mut [f32],
) {
    dot_rows(
        values,
        rows,
        d,
        cols,
        out,
        (false, |_, row, col| dot_f32(row, col)),
    );
}

/// As [`dot_rows_f32`] over int8 rows, each scaled by its `scales[k]`: with AVX2 intrinsics
/// when the CPU has them (see `x86`), else the portable loop.
pub fn dot_rows_i8(
    values: &[i8],
    scales: &[f32],
    rows: Range<usize>,
    d: usize,
    cols: &[&[f32]],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        dot_rows(
            values,
            rows,
            d,
            cols,
            out,
            (true, |k, row, col| x86::dot_i8(row, col) * scales[k]),
        );
        return;
    }
    dot_rows_i8_portable(values, scales, rows, d, cols, out);
}

/// As [`dot_rows_i8`] without intrinsics: CPUs without AVX2/FMA/F16C, other architectures
/// (not multiversioned: an AVX2 clone would never run, `x86` takes those CPUs).
pub fn dot_rows_i8_portable(
    values: &[i8],
    scales: &[f32],
    rows: Range<usize>,
    d: usize,
    cols: &[&[f32]],
    out: &mut [f32],
) {
    dot_rows(
        values,
        rows,
        d,
        cols,
        out,
        (true, |k, row, col| dot_i8(row, col) * scales[k]),
    );
}

/// An IEEE half's bits as f32 (exact), with integer and float ops that vectorise (the scalar
/// `half` conversion checks the CPU on every call).
#[inline(always)]
fn f16_to_f32(bits: u16) -> f32 {
    let h = u32::from(bits);
    // Move exponent and mantissa into f32's fields (exponent still biased by 15, not 127), then
    // rescale by 2^112: exact for normal and subnormal halves alike (a subnormal half becomes
    // a subnormal f32 first, whose scaled product is exact). Sign bit copied as is.
    // exp = 31 (inf/NaN) cannot occur: indexes refuse features outside the f16 range.
    let shifted = f32::from_bits((h & 0x7fff) << 13) * f32::from_bits(0x7780_0000); // 2^112
    f32::from_bits(shifted.to_bits() | ((h & 0x8000) << 16))
}

/// `Σ_i a_i b_i` over f16 × f32 in f32, converting in registers.
#[inline(always)]
pub fn dot_f16(a: &[half::f16], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] += f16_to_f32(x[i].to_bits()) * y[i];
        }
    }
    let tail: f32 = ar
        .iter()
        .zip(br)
        .map(|(x, y)| f16_to_f32(x.to_bits()) * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// As [`dot_rows_f32`] over f16 rows: with the F16C instructions (`vcvtph2ps`, 8 halves per
/// instruction) when the CPU has them, else converted with integer and float ops.
pub fn dot_rows_f16(
    values: &[half::f16],
    rows: Range<usize>,
    d: usize,
    cols: &[&[f32]],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        let bits: &[u16] = bytemuck::cast_slice(values);
        if x86::dot_rows_f16_few(bits, rows.clone(), d, cols, out) {
            return;
        }
        dot_rows(
            bits,
            rows,
            d,
            cols,
            out,
            (true, |_, row, col| x86::dot_f16(row, col)),
        );
        return;
    }
    dot_rows_f16_portable(values, rows, d, cols, out);
}

/// x86_64 kernels with intrinsics (F16C `vcvtph2ps`; int8 sign-extend + convert; FMA into 8
/// accumulators, the FMA latency × 2 ports in flight — written out because LLVM keeps wide
/// accumulator arrays on the stack): the one place outside `src/ffi/` and the memory map that
/// needs `unsafe`, behind run-time CPU checks. Any summation order is within the ranking
/// pass's `γ` bound.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    use crate::int_kernels::x86::{lane_mask, token_raws_by};
    use crate::int_kernels::TokenTerms;
    use crate::int_kernels::{prefetch_line_ahead, prefetch_sparse_ahead};

    use super::PAIR_GROUP;

    /// The most test columns the row kernels take at once (a single segment's tokens).
    pub const MAX_COLUMNS: usize = 8;

    /// The columns' pointers, the first repeated past the kernel's N.
    type Columns = [*const f32; MAX_COLUMNS];

    /// The row loop of the few-column kernels: `out[i·N + c]` for the n rows of d from
    /// `rows`, two at a time through `$two` (the dots of the 2 rows from `$p`) while `$pairs`,
    /// then one at a time through `$one`. Unsafe: `rows` must hold n·d values and `out` n·N.
    macro_rules! rows_in_pairs {
        ($rows:expr, $n:expr, $d:expr, $out:expr, $pairs:expr, |$p:ident| $two:expr, $one:expr) => {{
            let (rows, n, d, out) = ($rows, $n, $d, $out);
            let mut i = 0;
            while $pairs && i + 2 <= n {
                let $p = rows.add(i * d);
                for (h, dots) in $two.iter().enumerate() {
                    out[(i + h) * N..(i + h + 1) * N].copy_from_slice(dots);
                }
                i += 2;
            }
            while i < n {
                let $p = rows.add(i * d);
                let [dots] = $one;
                out[i * N..(i + 1) * N].copy_from_slice(&dots);
                i += 1;
            }
        }};
    }

    /// Whether this CPU has AVX2, FMA and F16C, all that [`dot8`] is compiled for (cached by
    /// std after the first check; every AVX2 CPU so far has the other two).
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    /// [`super::dot_rows_f32`] for 1–8 columns with AVX-512 F; `false` (doing nothing) for
    /// more columns or without it. A single query's f32 scan is a read with one
    /// multiply-add per 4 bytes; the portable loop's AVX2 code (a multiply and an add per
    /// 8 values, two loads each) kept one core 3–4 points further below a plain read of the
    /// rows (BENCHMARKS.md, session 8).
    pub fn dot_rows_f32_avx512(
        values: &[f32],
        rows: std::ops::Range<usize>,
        d: usize,
        cols: &[&[f32]],
        out: &mut [f32],
    ) -> bool {
        type Kernel = unsafe fn(*const f32, usize, usize, Columns, &mut [f32]);
        // Accumulators per row and column: 4 (one row) or 2 (pairs) up to 4 columns, 2 or 1
        // beyond (2·8·1 + 3 of the 32 registers).
        let kernels: [Kernel; MAX_COLUMNS] = [
            f32_rows::<1, 4, 2>,
            f32_rows::<2, 4, 2>,
            f32_rows::<3, 4, 2>,
            f32_rows::<4, 4, 2>,
            f32_rows::<5, 2, 1>,
            f32_rows::<6, 2, 1>,
            f32_rows::<7, 2, 1>,
            f32_rows::<8, 2, 1>,
        ];
        let l = cols.len();
        if !(1..=MAX_COLUMNS).contains(&l) || !is_x86_feature_detected!("avx512f") {
            return false;
        }
        let (n, ptrs) = (
            rows.len(),
            checked_columns(values, &rows, d, cols, out, "dot_rows_f32"),
        );
        // SAFETY: avx512f was just checked; rows start..end lie in `values` (d values each),
        // each column holds d values and `out` n·l (checked above).
        unsafe { kernels[l - 1](values.as_ptr().add(rows.start * d), n, d, ptrs, out) };
        true
    }

    /// The 1–8 columns' pointers (the first repeated past them) for the row kernels, after
    /// checking that rows `rows` lie in `values` (d values each), each column holds d values
    /// and `out` rows × columns; panics naming `what` otherwise.
    fn checked_columns<T>(
        values: &[T],
        rows: &std::ops::Range<usize>,
        d: usize,
        cols: &[&[f32]],
        out: &[f32],
        what: &str,
    ) -> Columns {
        assert!(
            rows.end <= values.len() / d.max(1)
                && out.len() >= rows.len() * cols.len()
                && cols.iter().all(|col| col.len() == d),
            "{what}: shapes differ"
        );
        std::array::from_fn(|i| cols[i.min(cols.len() - 1)].as_ptr())
    }

    /// `out[i·N + c] = row_i · col_c` for n rows of d from `rows`. One column: one row at a
    /// time, 64 values per step in four accumulators (two measured 0–2 points slower on one
    /// core). More: two rows side by side sharing each column load, 32 values of each per
    /// step in two accumulators per row and column, the lines asked for ahead as the loop
    /// reaches them ([`f32_dots`]): one core read 3 columns at 64–67 % of a plain read of
    /// the rows one at a time, at 83–108 % in pairs, and 3-token queries on both cores went
    /// from 73–81 % to 81–91 % of their read (BENCHMARKS.md, session 10). One column stays a
    /// row at a time: its pairs measured 5–19 points slower.
    ///
    /// # Safety
    /// AVX-512 F is present; `rows` holds n·d values, each column d, `out` n·N.
    #[target_feature(enable = "avx512f")]
    unsafe fn f32_rows<const N: usize, const U1: usize, const U2: usize>(
        rows: *const f32,
        n: usize,
        d: usize,
        cols: Columns,
        out: &mut [f32],
    ) {
        // SAFETY: rows i, i + 1 < n span rows[i·d .. (i + 2)·d], out[i·N + c] lies in out.
        unsafe {
            rows_in_pairs!(
                rows,
                n,
                d,
                out,
                N > 1,
                |p| f32_dots::<2, N, U2>(p, d, cols, true),
                f32_dots::<1, N, U1>(p, d, cols, N > 1)
            )
        }
    }

    /// The dots of `R` consecutive rows from `r` with the first `N` columns: `16·U` values of
    /// each row per step in `U` accumulators per row and column (each column vector loaded
    /// once for the `R` rows), the last `d mod 16` under a mask. `ahead`: ask for each line
    /// of the rows [`PREFETCH_AHEAD`](crate::int_kernels::PREFETCH_AHEAD) bytes on as the
    /// loop reaches it; else for every 8th line of the row (`d` a multiple of 128 keeps that
    /// every 8th line of the scan) [`SPARSE_AHEAD`](crate::int_kernels::SPARSE_AHEAD) bytes
    /// on: one column, the loop a read and an FMA a line, went from 82–90 % to 92 % of the
    /// fastest plain read on two cores, 85 % to 93 % on one (session 17).
    ///
    /// # Safety
    /// AVX-512 F is present; `r` is valid for `R·d` reads and each column for `d`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn f32_dots<const R: usize, const N: usize, const U: usize>(
        r: *const f32,
        d: usize,
        cols: Columns,
        ahead: bool,
    ) -> [[f32; N]; R] {
        // SAFETY: full loads cover [j, j + 16) with j + 16 ≤ d of each row, the tail's mask
        // [j, d).
        unsafe {
            let mut acc = [[[_mm512_setzero_ps(); U]; N]; R];
            let mut j = 0;
            while j + 16 * U <= d {
                if !ahead && j % (16 * 8) == 0 {
                    prefetch_sparse_ahead(r.add(j).cast());
                }
                for u in 0..U {
                    let mut x = [_mm512_setzero_ps(); R];
                    for h in 0..R {
                        let p = r.add(h * d + j + 16 * u);
                        if ahead {
                            prefetch_line_ahead(p.cast());
                        }
                        x[h] = _mm512_loadu_ps(p);
                    }
                    for c in 0..N {
                        let y = _mm512_loadu_ps(cols[c].add(j + 16 * u));
                        for h in 0..R {
                            acc[h][c][u] = _mm512_fmadd_ps(x[h], y, acc[h][c][u]);
                        }
                    }
                }
                j += 16 * U;
            }
            while j < d {
                let m = lane_mask(d - j) as __mmask16;
                let mut x = [_mm512_setzero_ps(); R];
                for h in 0..R {
                    x[h] = _mm512_maskz_loadu_ps(m, r.add(h * d + j));
                }
                for c in 0..N {
                    let y = _mm512_maskz_loadu_ps(m, cols[c].add(j));
                    for h in 0..R {
                        acc[h][c][0] = _mm512_fmadd_ps(x[h], y, acc[h][c][0]);
                    }
                }
                j += 16;
            }
            let mut dots = [[0.0; N]; R];
            for (dots, acc) in dots.iter_mut().zip(&acc) {
                for (dot, acc) in dots.iter_mut().zip(acc) {
                    let sum = acc[1..].iter().fold(acc[0], |s, a| _mm512_add_ps(s, *a));
                    *dot = _mm512_reduce_add_ps(sum);
                }
            }
            dots
        }
    }

    /// [`super::one_column_scores_group`] with AVX-512 F; `None` (doing nothing) without it
    /// or when the shapes do not hold: 1 to [`PAIR_GROUP`] tokens, the same number of `r`
    /// (C each), `dots` and `factors`, and every slice as long as C and Q = `low.len()` need.
    pub fn one_column_scores_group(
        r: &[&[f64]],
        dots: &[&[f32]],
        (coefs_t, table): (&[f64], &[f64]),
        factors: &[f64],
        (low, high): (&[f64], &[f64]),
        out: &mut [f64],
    ) -> Option<u8> {
        let (n, q) = (r.len(), low.len());
        let c = r.first()?.len();
        let fits = (1..=PAIR_GROUP).contains(&n)
            && dots.len() == n
            && factors.len() == n
            && r.iter().all(|r| r.len() == c)
            && dots.iter().all(|x| x.len() >= q)
            && coefs_t.len() >= c * q
            && table.len() >= c * q
            && high.len() >= q
            && out.len() >= n * q;
        if !fits || !is_x86_feature_detected!("avx512f") || !is_x86_feature_detected!("fma") {
            return None;
        }
        let args = (r, dots, (coefs_t, table), factors, (low, high), out);
        // SAFETY: AVX-512 F and FMA were just checked, the slices' lengths above; each
        // kernel takes at least n tokens (the last repeated up to G).
        Some(unsafe {
            match n {
                1 => pair_group::<1>(args),
                2 => pair_group::<2>(args),
                3 | 4 => pair_group::<4>(args),
                _ => pair_group::<8>(args),
            }
        })
    }

    /// The arguments of [`one_column_scores_group`], as one tuple.
    type GroupArgs<'a> = (
        &'a [&'a [f64]],
        &'a [&'a [f32]],
        (&'a [f64], &'a [f64]),
        &'a [f64],
        (&'a [f64], &'a [f64]),
        &'a mut [f64],
    );

    /// The body of [`one_column_scores_group`] for G ≥ n tokens (the last of the n repeated
    /// to fill G, its scores not stored twice): 8 queries a vector, each token's sum over the
    /// labels in a register (`o = fma(r_j, fma(x, c_j, t_j), o)` from 0, in label order, as
    /// the one-token loop), the tail one query at a time with the same FMAs.
    ///
    /// # Safety
    /// AVX-512 F and FMA are present; 1 ≤ n ≤ G and the slices as checked by the caller.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn pair_group<const G: usize>(
        (r, dots, (coefs_t, table), factors, (low, high), out): GroupArgs,
    ) -> u8 {
        let (n, c, q) = (r.len(), r[0].len(), low.len());
        let at = |g: usize| g.min(n - 1);
        let (r, dots): ([&[f64]; G], [&[f32]; G]) = (
            std::array::from_fn(|g| r[at(g)]),
            std::array::from_fn(|g| dots[at(g)]),
        );
        let factors: [f64; G] = std::array::from_fn(|g| factors[at(g)]);
        let mut flags = [0u8; G];
        let mut i = 0;
        // SAFETY: vector loads and stores at i..i + 8 ≤ q of rows of q (coefs_t, table: C of
        // them; dots: one per token; out: one per token g < n), as the caller checked.
        unsafe {
            while i + 8 <= q {
                let x: [__m512d; G] = std::array::from_fn(|g| {
                    _mm512_cvtps_pd(_mm256_loadu_ps(dots[g].as_ptr().add(i)))
                });
                let mut acc = [_mm512_setzero_pd(); G];
                for j in 0..c {
                    let cj = _mm512_loadu_pd(coefs_t.as_ptr().add(j * q + i));
                    let tj = _mm512_loadu_pd(table.as_ptr().add(j * q + i));
                    for g in 0..G {
                        let u = _mm512_fmadd_pd(x[g], cj, tj);
                        let rj = _mm512_set1_pd(*r[g].get_unchecked(j));
                        acc[g] = _mm512_fmadd_pd(rj, u, acc[g]);
                    }
                }
                let (lo, hi) = (
                    _mm512_loadu_pd(low.as_ptr().add(i)),
                    _mm512_loadu_pd(high.as_ptr().add(i)),
                );
                for g in 0..G {
                    let o = _mm512_mul_pd(acc[g], _mm512_set1_pd(factors[g]));
                    if g < n {
                        _mm512_storeu_pd(out.as_mut_ptr().add(g * q + i), o);
                    }
                    flags[g] |= _mm512_cmp_pd_mask::<_CMP_LE_OQ>(o, lo)
                        | _mm512_cmp_pd_mask::<_CMP_GE_OQ>(o, hi);
                }
                i += 8;
            }
        }
        let mut outside = (0..n).fold(0u8, |bits, g| bits | (u8::from(flags[g] != 0) << g));
        for i in i..q {
            for g in 0..n {
                let x = f64::from(dots[g][i]);
                let o = (0..c).fold(0.0, |o, j| {
                    r[g][j].mul_add(x.mul_add(coefs_t[j * q + i], table[j * q + i]), o)
                });
                let o = o * factors[g];
                out[g * q + i] = o;
                outside |= u8::from((o <= low[i]) | (o >= high[i])) << g;
            }
        }
        outside
    }

    /// A block's test-column dots as the block scoring reads them, M a token: f32 dots
    /// (`[f32]`, token-major), or integer dots scaled as they are read ([`ScaledDots`]).
    pub trait BlockDots: Copy {
        /// How many tokens' dots it holds at `m` columns; `None` when it cannot serve `m`.
        fn tokens(self, m: usize) -> Option<usize>;

        /// Token `i`'s M dots.
        ///
        /// # Safety
        /// `i < self.tokens(M)`.
        unsafe fn get<const M: usize>(self, i: usize) -> [f64; M];
    }

    impl BlockDots for &[f32] {
        fn tokens(self, m: usize) -> Option<usize> {
            Some(self.len() / m)
        }

        #[inline(always)]
        unsafe fn get<const M: usize>(self, i: usize) -> [f64; M] {
            let mut x = [0.0; M];
            for (l, x) in x.iter_mut().enumerate() {
                // SAFETY: token i < len / M (by the caller).
                *x = f64::from(unsafe { *self.get_unchecked(i * M + l) });
            }
            x
        }
    }

    /// Integer dots `ints` (token-major, M a token) with their rows' and columns' scales,
    /// read as [`super::scaled_dot`]s.
    #[derive(Clone, Copy)]
    pub struct ScaledDots<'a> {
        pub ints: &'a [i32],
        pub row_scales: &'a [f32],
        pub col_scales: &'a [f64],
    }

    impl BlockDots for ScaledDots<'_> {
        fn tokens(self, m: usize) -> Option<usize> {
            (self.col_scales.len() == m).then(|| (self.ints.len() / m).min(self.row_scales.len()))
        }

        #[inline(always)]
        unsafe fn get<const M: usize>(self, i: usize) -> [f64; M] {
            // SAFETY (every read): token i < tokens(M), so its scale and its M dots lie in
            // the slices, and M column scales (by the caller).
            let s_k = unsafe { *self.row_scales.get_unchecked(i) };
            let mut x = [0.0; M];
            for (l, x) in x.iter_mut().enumerate() {
                let (dot, s_l) = unsafe {
                    (
                        *self.ints.get_unchecked(i * M + l),
                        *self.col_scales.get_unchecked(l),
                    )
                };
                *x = f64::from(super::scaled_dot(dot, s_k, s_l));
            }
            x
        }
    }

    /// [`super::token_raws`] (and [`super::token_raws_scaled`]) with AVX-512 F; `false`
    /// (doing nothing) without it, for more than [`MAX_COLUMNS`] columns, or dots that cannot
    /// serve the terms' columns. Panics, as the portable loop would, when a class or a row
    /// lies past its slice.
    pub fn token_raws_avx512<D: BlockDots>(terms: &TokenTerms, dots: D, out: &mut [f64]) -> bool {
        let kernels: [unsafe fn(&TokenTerms, D, &mut [f64]); MAX_COLUMNS] = [
            raws::<1, D>,
            raws::<2, D>,
            raws::<3, D>,
            raws::<4, D>,
            raws::<5, D>,
            raws::<6, D>,
            raws::<7, D>,
            raws::<8, D>,
        ];
        let m = terms.columns;
        if !(1..=MAX_COLUMNS).contains(&m) || !is_x86_feature_detected!("avx512f") {
            return false;
        }
        let Some(n) = dots.tokens(m) else {
            return false;
        };
        let n = n.min(out.len());
        let out = &mut out[..n];
        terms.check(out.len(), "token_raws");
        // SAFETY: avx512f was just checked; `check` covered every row read, and `dots` holds
        // the out.len() ≤ n tokens' dots.
        unsafe { kernels[m - 1](terms, dots, out) };
        true
    }

    /// [`token_raws_avx512`] for M columns.
    ///
    /// # Safety
    /// AVX-512 F is present; the terms (M columns) cover `out.len()` tokens, whose M dots
    /// each `dots` holds.
    #[target_feature(enable = "avx512f")]
    unsafe fn raws<const M: usize, D: BlockDots>(terms: &TokenTerms, dots: D, out: &mut [f64]) {
        // SAFETY: by the caller.
        unsafe { token_raws_by::<M>(terms, out, |i| dots.get::<M>(i)) };
    }

    /// `Σ_i half(a_i) b_i` in f32. The caller has checked [`available`].
    #[inline(always)]
    pub fn dot_f16(a: &[u16], b: &[f32]) -> f32 {
        // SAFETY: `available()` was checked by the only caller (dot_rows_f16); loads stay in
        // bounds (see `dot8`).
        unsafe {
            dot8(
                a,
                b,
                |p| _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                |x| half::f16::from_bits(x).to_f32(),
            )
        }
    }

    /// `Σ_i a_i b_i` over int8 × f32 in f32. The caller has checked [`available`].
    #[inline(always)]
    pub fn dot_i8(a: &[i8], b: &[f32]) -> f32 {
        // SAFETY: `available()` was checked by the only caller (dot_rows_i8); loads stay in
        // bounds (see `dot8`).
        unsafe {
            dot8(
                a,
                b,
                |p| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))),
                f32::from,
            )
        }
    }

    /// [`super::dot_rows_f16`] for 2–8 columns (a multi-token segment's), each row's halves
    /// converted once for all of them ([`f16_rows`]), and for 1 where the AVX-512 kernels
    /// take one- and two-column scans ([`crate::int_kernels::pairs_for_few_columns`]);
    /// `false` (doing nothing) for other column counts, where one column is [`dot_f16`]'s.
    /// The caller has checked [`available`].
    pub fn dot_rows_f16_few(
        values: &[u16],
        rows: std::ops::Range<usize>,
        d: usize,
        cols: &[&[f32]],
        out: &mut [f32],
    ) -> bool {
        let wide = is_x86_feature_detected!("avx512f");
        let narrow_too = crate::int_kernels::pairs_for_few_columns();
        dot_rows_f16_few_with(values, rows, d, cols, out, (wide, narrow_too))
    }

    /// [`dot_rows_f16_few`], the AVX-512 kernels for 5–8 columns when `wide` (which the
    /// caller checked), and for 1–2 as well when `narrow_too`, else AVX2 (the tests run all
    /// three).
    pub fn dot_rows_f16_few_with(
        values: &[u16],
        rows: std::ops::Range<usize>,
        d: usize,
        cols: &[&[f32]],
        out: &mut [f32],
        (wide, narrow_too): (bool, bool),
    ) -> bool {
        type Kernel = unsafe fn(*const u16, usize, usize, Columns, &mut [f32]);
        // Rows at a time and accumulators per row and column: R·N·U ≤ 12 of the 16 registers.
        let kernels: [Kernel; MAX_COLUMNS - 1] = [
            f16_rows::<2, 2, 2>,
            f16_rows::<3, 2, 2>,
            f16_rows::<4, 2, 1>,
            f16_rows::<5, 1, 1>,
            f16_rows::<6, 1, 1>,
            f16_rows::<7, 1, 1>,
            f16_rows::<8, 1, 1>,
        ];
        // With AVX-512 F, 5–8 columns in pairs of rows, 16 halves per step (2·8 accumulators
        // of the 32 registers): one core, hot in L2, 5 columns took 77 ns a row here against
        // 117 one row at a time through AVX2, 8 columns 120 against 176 (a read: ~65 ns).
        let wide_kernels: [Kernel; 6] = [
            f16_rows_avx512::<1>,
            f16_rows_avx512::<2>,
            f16_rows_avx512::<5>,
            f16_rows_avx512::<6>,
            f16_rows_avx512::<7>,
            f16_rows_avx512::<8>,
        ];
        let l = cols.len();
        let narrow = wide && narrow_too;
        let takes = (2..=MAX_COLUMNS).contains(&l) || (narrow && l == 1);
        if !takes {
            return false;
        }
        let (n, ptrs) = (
            rows.len(),
            checked_columns(values, &rows, d, cols, out, "dot_rows_f16"),
        );
        let kernel = match l {
            1 | 2 if narrow => wide_kernels[l - 1],
            5.. if wide => wide_kernels[l - 3],
            _ => kernels[l - 2],
        };
        // SAFETY: the caller checked avx2/fma/f16c (and avx512f was for the wide kernels);
        // rows start..end lie in `values` (d values each), each column holds d values and
        // `out` n·l (checked above).
        unsafe { kernel(values.as_ptr().add(rows.start * d), n, d, ptrs, out) };
        true
    }

    /// As [`f16_rows`] with AVX-512 F for 5–8 columns: two rows side by side, 16 halves of
    /// each per step converted at once (`vcvtph2ps` to 16 lanes), one accumulator per row and
    /// column ([`f16_dots512`]).
    ///
    /// # Safety
    /// AVX-512 F is present; `rows` holds n·d values, each column d, `out` n·N.
    #[target_feature(enable = "avx512f")]
    unsafe fn f16_rows_avx512<const N: usize>(
        rows: *const u16,
        n: usize,
        d: usize,
        cols: Columns,
        out: &mut [f32],
    ) {
        // SAFETY: rows i, i + 1 < n span rows[i·d .. (i + 2)·d], out[i·N + c] lies in out.
        unsafe {
            rows_in_pairs!(
                rows,
                n,
                d,
                out,
                true,
                |p| f16_dots512::<2, N>(p, d, cols),
                f16_dots512::<1, N>(p, d, cols)
            )
        }
    }

    /// The dots of `R` consecutive rows of halves from `r` with the first `N` columns: 32
    /// halves (a line) of each row per step, asked for
    /// [`PREFETCH_AHEAD`](crate::int_kernels::PREFETCH_AHEAD) bytes on, converted 16 at a
    /// time; then 16 at a time, the last `d mod 16` one by one.
    ///
    /// # Safety
    /// AVX-512 F is present; `r` is valid for `R·d` reads and each column for `d`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn f16_dots512<const R: usize, const N: usize>(
        r: *const u16,
        d: usize,
        cols: Columns,
    ) -> [[f32; N]; R] {
        // SAFETY: every vector load covers [j, j + 16) with j + 16 ≤ d of each row; the tail
        // reads j < d.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); N]; R];
            let mut j = 0;
            // 16 halves of each row at j into the accumulators (a macro, as in `f16_dots`).
            macro_rules! step {
                ($j:expr) => {{
                    let mut x = [_mm512_setzero_ps(); R];
                    for h in 0..R {
                        x[h] = _mm512_cvtph_ps(_mm256_loadu_si256(r.add(h * d + $j).cast()));
                    }
                    for c in 0..N {
                        let y = _mm512_loadu_ps(cols[c].add($j));
                        for h in 0..R {
                            acc[h][c] = _mm512_fmadd_ps(x[h], y, acc[h][c]);
                        }
                    }
                }};
            }
            while j + 32 <= d {
                for h in 0..R {
                    prefetch_line_ahead(r.add(h * d + j).cast());
                }
                step!(j);
                step!(j + 16);
                j += 32;
            }
            while j + 16 <= d {
                step!(j);
                j += 16;
            }
            let mut dots = [[0.0; N]; R];
            for (h, (dots, acc)) in dots.iter_mut().zip(&acc).enumerate() {
                for (c, (dot, acc)) in dots.iter_mut().zip(acc).enumerate() {
                    let tail: f32 = (j..d)
                        .map(|t| half::f16::from_bits(*r.add(h * d + t)).to_f32() * *cols[c].add(t))
                        .sum();
                    *dot = _mm512_reduce_add_ps(*acc) + tail;
                }
            }
            dots
        }
    }

    /// `out[i·N + c] = half(row_i) · col_c` for n rows of d halves from `rows`: two rows
    /// side by side sharing each column load ([`f16_dots`], the odd last row alone), the
    /// lines asked for ahead as the loop reaches them. One row at a time with a burst of
    /// prefetches per row, one core read 3 columns at 64–70 % of a plain read of the rows
    /// (each row's conversions and 6 FMAs per 8 values took 76–90 ns hot in L2, against the
    /// read's ~68 ns a row), in pairs at 78–95 % (48–70 ns hot); 3-token queries on both
    /// cores went from 56–81 % to 73–86 % of their read, 2-token ones did not move
    /// (BENCHMARKS.md, session 10).
    ///
    /// # Safety
    /// AVX2, FMA and F16C are present; `rows` holds n·d values, each column d, `out` n·N.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_rows<const N: usize, const R: usize, const U: usize>(
        rows: *const u16,
        n: usize,
        d: usize,
        cols: Columns,
        out: &mut [f32],
    ) {
        // SAFETY: rows i, i + 1 < n span rows[i·d .. (i + 2)·d], out[i·N + c] lies in out.
        unsafe {
            rows_in_pairs!(
                rows,
                n,
                d,
                out,
                R == 2,
                |p| f16_dots::<2, N, U>(p, d, cols),
                f16_dots::<1, N, U>(p, d, cols)
            )
        }
    }

    /// The dots of `R` consecutive rows of halves from `r` with the first `N` columns: 32
    /// halves (a line) of each row per step, asked for
    /// [`PREFETCH_AHEAD`](crate::int_kernels::PREFETCH_AHEAD) bytes on, converted 8 at a time
    /// (F16C) and multiplied into each column, taking the `U` accumulators per row and column
    /// in turn (`R·N·U` ≤ 12 of the 16 registers); then 8 at a time, the last `d mod 8` one
    /// by one.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are present; `r` is valid for `R·d` reads and each column for `d`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn f16_dots<const R: usize, const N: usize, const U: usize>(
        r: *const u16,
        d: usize,
        cols: Columns,
    ) -> [[f32; N]; R] {
        // SAFETY: every vector load covers [j, j + 8) with j + 8 ≤ d of each row; the tail
        // reads j < d.
        unsafe {
            let mut acc = [[[_mm256_setzero_ps(); U]; N]; R];
            let mut j = 0;
            // 8 halves of each row at j into accumulator u (a macro: a closure here is not
            // compiled with the function's CPU features, and a call per step is slow).
            macro_rules! step {
                ($j:expr, $u:expr) => {{
                    let mut x = [_mm256_setzero_ps(); R];
                    for h in 0..R {
                        x[h] = _mm256_cvtph_ps(_mm_loadu_si128(r.add(h * d + $j).cast()));
                    }
                    for c in 0..N {
                        let y = _mm256_loadu_ps(cols[c].add($j));
                        for h in 0..R {
                            acc[h][c][$u] = _mm256_fmadd_ps(x[h], y, acc[h][c][$u]);
                        }
                    }
                }};
            }
            while j + 32 <= d {
                for h in 0..R {
                    prefetch_line_ahead(r.add(h * d + j).cast());
                }
                for u in 0..4 {
                    step!(j + 8 * u, u % U);
                }
                j += 32;
            }
            while j + 8 <= d {
                step!(j, 0);
                j += 8;
            }
            let mut dots = [[0.0; N]; R];
            for (h, (dots, acc)) in dots.iter_mut().zip(&acc).enumerate() {
                for (c, (dot, acc)) in dots.iter_mut().zip(acc).enumerate() {
                    let sum = acc[1..].iter().fold(acc[0], |s, a| _mm256_add_ps(s, *a));
                    let mut lanes = [0.0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
                    let tail: f32 = (j..d)
                        .map(|t| half::f16::from_bits(*r.add(h * d + t)).to_f32() * *cols[c].add(t))
                        .sum();
                    *dot = lanes.iter().sum::<f32>() + tail;
                }
            }
            dots
        }
    }

    /// `Σ_i widen(a_i) b_i`: `load8(p)` widens the 8 values at `p` to f32 lanes, `one` a single
    /// value (the tail). Loads read `a[i..i + 8]` and `b[i..i + 8]` with `i + 8 <= n` only.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot8<T: Copy>(
        a: &[T],
        b: &[f32],
        load8: impl Fn(*const T) -> __m256,
        one: impl Fn(T) -> f32,
    ) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut i = 0;
        // SAFETY: every load covers 8 elements at an offset + 8 <= n (the loop bounds).
        unsafe {
            while i + 64 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let x = load8(pa.add(i + 8 * j));
                    *acc = _mm256_fmadd_ps(x, _mm256_loadu_ps(pb.add(i + 8 * j)), *acc);
                }
                i += 64;
            }
            while i + 8 <= n {
                let x = load8(pa.add(i));
                acc[0] = _mm256_fmadd_ps(x, _mm256_loadu_ps(pb.add(i)), acc[0]);
                i += 8;
            }
        }
        let sum = acc[1..].iter().fold(acc[0], |s, a| _mm256_add_ps(s, *a));
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        let tail: f32 = (i..n).map(|k| one(a[k]) * b[k]).sum();
        lanes.iter().sum::<f32>() + tail
    }
}

/// As [`dot_rows_f32`] over f16 rows, converted in registers without F16C: CPUs without
/// AVX2/FMA/F16C, other architectures (not multiversioned, as for int8).
pub fn dot_rows_f16_portable(
    values: &[half::f16],
    rows: Range<usize>,
    d: usize,
    cols: &[&[f32]],
    out: &mut [f32],
) {
    dot_rows(
        values,
        rows,
        d,
        cols,
        out,
        (true, |_, row, col| dot_f16(row, col)),
    );
}

/// `out = Σ_j coefs[j] · rows[j]` for `rows` of `out.len()` values each (a small
/// vector-times-matrix: the per-pair terms of a batched scan, DESIGN.md §3).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn combine_rows(coefs: &[f64], rows: &[f64], out: &mut [f64]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    let n = out.len();
    for (&a, row) in coefs.iter().zip(rows.chunks_exact(n.max(1))) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o += a * x;
        }
    }
}

/// A training token's scores against a batch of one-column queries (DESIGN.md §3 regrouped,
/// see `query::score::one_column_pairs`): `out[q] = factor · Σ_j r[j]·(dots[q]·coefs_t[j,q] +
/// table[j,q])` (`coefs_t`, `table`: C × Q row-major), and whether any `out[q]` lies outside
/// `(low[q], high[q])` (only then can a query's keeper take it).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn one_column_scores(
    r: &[f64],
    dots: &[f32],
    (coefs_t, table): (&[f64], &[f64]),
    factor: f64,
    (low, high): (&[f64], &[f64]),
    out: &mut [f64],
) -> bool {
    // Label by label over the row (simple loops that vectorise fully; register-blocked and
    // column-sliced variants measured slower), then the cut test without branches. `mul_add`
    // is one FMA instruction in the clones (the portable fallback calls libm's `fma`).
    let q = out.len();
    let dots = &dots[..q];
    out.iter_mut().for_each(|o| *o = 0.0);
    for (j, &rj) in r.iter().enumerate() {
        let (c, t) = (&coefs_t[j * q..(j + 1) * q], &table[j * q..(j + 1) * q]);
        for (((o, &x), &c), &t) in out.iter_mut().zip(dots).zip(c).zip(t) {
            *o = rj.mul_add(f64::from(x).mul_add(c, t), *o);
        }
    }
    let mut outside = false;
    for ((o, &lo), &hi) in out.iter_mut().zip(low).zip(high) {
        *o *= factor;
        outside |= (*o <= lo) | (*o >= hi);
    }
    outside
}

/// The most tokens of one group of [`one_column_scores_group`].
pub const PAIR_GROUP: usize = 8;

/// [`one_column_scores`] for up to [`PAIR_GROUP`] tokens of one pair class at once (`r`,
/// `dots` and `factors` per token, `out` their Q scores one after the other); bit `g` of the
/// result says whether token `g` has a score outside the cuts. The same arithmetic lane by
/// lane, so the same scores to the bit, but each query's coefficient and table values are
/// loaded once for the group. One token at a time the loop was bound by those loads (C × Q
/// × 2 f64, ~43 KB for Q = 300: past L1), not by its FMAs (`perf`, session 13: ~10 cycles a
/// pair where the FMAs take ~1).
pub fn one_column_scores_group(
    r: &[&[f64]],
    dots: &[&[f32]],
    (coefs_t, table): (&[f64], &[f64]),
    factors: &[f64],
    (low, high): (&[f64], &[f64]),
    out: &mut [f64],
) -> u8 {
    let (n, q) = (r.len().min(PAIR_GROUP), low.len());
    #[cfg(target_arch = "x86_64")]
    if let Some(outside) =
        x86::one_column_scores_group(r, dots, (coefs_t, table), factors, (low, high), out)
    {
        return outside;
    }
    (0..n).fold(0, |flags, g| {
        let outside = one_column_scores(
            r[g],
            dots[g],
            (coefs_t, table),
            factors[g],
            (low, high),
            &mut out[g * q..(g + 1) * q],
        );
        flags | (u8::from(outside) << g)
    })
}

/// An integer ranking dot in f32: `dot·(s_k·s_l)` for row scale `s_k` and column scale
/// `s_l`, as every integer path computes it (the proof bounds this value's error).
#[inline(always)]
pub fn scaled_dot(dot: i32, s_k: f32, s_l: f64) -> f32 {
    (f64::from(dot) * (f64::from(s_k) * s_l)) as f32
}

/// [`token_raws`] on the dots `scaled_dot(ints[i·M + l], row_scales[i], col_scales[l])`
/// (M = `terms.columns`), computed as they are read: the integer paths' dots without the
/// pass that scales them into an f32 block first (the same values to the bit). `false`
/// (doing nothing) without AVX-512 F, for more than [`x86::MAX_COLUMNS`] columns or
/// `col_scales` of another length; the caller then scales and calls [`token_raws`].
pub fn token_raws_scaled(
    terms: &TokenTerms,
    (ints, row_scales, col_scales): (&[i32], &[f32], &[f64]),
    out: &mut [f64],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86::token_raws_avx512(
        terms,
        x86::ScaledDots {
            ints,
            row_scales,
            col_scales,
        },
        out,
    );
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (terms, ints, row_scales, col_scales, out);
        false
    }
}

/// A block's raw token scores against one query of M ≥ 1 test columns (DESIGN.md §3, see
/// `query::score::Ctx::token_score`): `out[i] = Σ_j r[i,j]·(Σ_l dots[i,l]·coefs[l,j] +
/// table[classes[i], j])` with `r` rows × C, `dots` rows × M and `table` ((C+1)² × C) the
/// query's per-(previous, next label) rows. With AVX-512 (M ≤ 8) a token's labels in
/// registers of 8 (a third of the instructions of the scalar loop, which is what bounds this
/// pass: `r` streams at a fraction of the memory's rate); four partial sums otherwise, as
/// `token_score`.
pub fn token_raws(terms: &TokenTerms, dots: &[f32], out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if x86::token_raws_avx512(terms, dots, out) {
        return;
    }
    token_raws_portable(terms, dots, out);
}

/// [`token_raws`] without AVX-512.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn token_raws_portable(terms: &TokenTerms, dots: &[f32], out: &mut [f64]) {
    let (coefs, table, m) = (terms.coefs, terms.table, terms.columns.max(1));
    let c = terms.labels();
    let u_of = |x: &[f32], t: &[f64], j: usize| {
        (x.iter().enumerate()).fold(t[j], |u, (l, &x)| f64::from(x).mul_add(coefs[l * c + j], u))
    };
    let rows = terms.r.chunks_exact(c.max(1));
    let rows = rows.zip(dots.chunks_exact(m)).zip(terms.classes);
    for (o, ((r, x), &pn)) in out.iter_mut().zip(rows) {
        let pn = pn as usize;
        let t = &table[pn * c..(pn + 1) * c];
        let mut s = [0.0f64; 4];
        let mut j = 0;
        while j + 4 <= c {
            for i in 0..4 {
                s[i] = r[j + i].mul_add(u_of(x, t, j + i), s[i]);
            }
            j += 4;
        }
        let tail = (j..c).fold(0.0, |a, j| r[j].mul_add(u_of(x, t, j), a));
        *o = (s[0] + s[1]) + (s[2] + s[3]) + tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_row_kernels_agree_with_each_other_and_with_exact_sums() {
        let d = 77;
        let rows: Vec<i8> = (0..3 * d).map(|i| ((i * 37) % 255) as u8 as i8).collect();
        let scales = [0.5f32, 0.25, 2.0];
        let col: Vec<f32> = (0..d).map(|i| (i as f32 * 0.11).cos()).collect();
        let (mut fast, mut portable) = ([0.0f32; 3], [0.0f32; 3]);
        dot_rows_i8(&rows, &scales, 0..3, d, &[&col], &mut fast);
        dot_rows_i8_portable(&rows, &scales, 0..3, d, &[&col], &mut portable);
        for k in 0..3 {
            let terms = (0..d).map(|j| f64::from(rows[k * d + j]) * f64::from(col[j]));
            let exact = terms.clone().sum::<f64>() * f64::from(scales[k]);
            let scale = terms.map(f64::abs).sum::<f64>() * f64::from(scales[k]);
            for got in [fast[k], portable[k]] {
                assert!(
                    (f64::from(got) - exact).abs() <= 1e-5 * scale,
                    "{got} vs {exact}"
                );
            }
        }
    }

    /// Both f32 row paths, for 1–9 columns (9: the AVX-512 kernel declines, the portable
    /// loop runs) and dims with and without a tail, within Higham's bound for any order of
    /// summation, `γ_d·Σ|x_j y_j|` (the bound the ranking proof uses), and alike.
    #[test]
    fn f32_row_kernels_agree_with_each_other_and_with_exact_sums() {
        for d in [5, 16, 77, 768] {
            let rows: Vec<f32> = (0..6 * d).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let cols: Vec<Vec<f32>> = (0..9)
                .map(|c| (0..d).map(|j| ((j + 7 * c) as f32 * 0.11).cos()).collect())
                .collect();
            let gamma = d as f64 * 2f64.powi(-24) / (1.0 - d as f64 * 2f64.powi(-24));
            for l in 1..=9 {
                let cols: Vec<&[f32]> = cols[..l].iter().map(|c| c.as_slice()).collect();
                // 5 rows: two pairs and an odd one for the kernels that read rows in pairs.
                let (mut fast, mut portable) = (vec![0.0f32; 5 * l], vec![0.0f32; 5 * l]);
                dot_rows_f32(&rows, 1..6, d, &cols, &mut fast);
                dot_rows_f32_portable(&rows, 1..6, d, &cols, &mut portable);
                for (i, k) in (1..6).enumerate() {
                    for (c, col) in cols.iter().enumerate() {
                        let terms = (0..d).map(|j| f64::from(rows[k * d + j]) * f64::from(col[j]));
                        let exact: f64 = terms.clone().sum();
                        let bound = gamma * terms.map(f64::abs).sum::<f64>();
                        for got in [fast[i * l + c], portable[i * l + c]] {
                            assert!(
                                (f64::from(got) - exact).abs() <= bound,
                                "d {d}, {l} columns, row {k}, column {c}: {got} vs {exact}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// 1–9 columns over f16 rows (2–8 through the kernel that converts each row once), d
    /// with and without tails, against exact sums within Higham's `γ_d·Σ|x_j y_j|`.
    #[test]
    fn f16_rows_against_several_columns_are_within_the_rounding_bound() {
        for d in [5, 16, 77, 768] {
            let rows: Vec<half::f16> = (0..6 * d)
                .map(|i| half::f16::from_f32((i as f32 * 0.37).sin() * 3.0))
                .collect();
            let cols: Vec<Vec<f32>> = (0..9)
                .map(|c| (0..d).map(|j| ((j + 7 * c) as f32 * 0.11).cos()).collect())
                .collect();
            let gamma = d as f64 * 2f64.powi(-24) / (1.0 - d as f64 * 2f64.powi(-24));
            for l in 1..=9 {
                let cols: Vec<&[f32]> = cols[..l].iter().map(|c| c.as_slice()).collect();
                // 5 rows: two pairs and an odd one for the kernels that read rows in pairs.
                let (mut fast, mut portable) = (vec![0.0f32; 5 * l], vec![0.0f32; 5 * l]);
                dot_rows_f16(&rows, 1..6, d, &cols, &mut fast);
                dot_rows_f16_portable(&rows, 1..6, d, &cols, &mut portable);
                // The AVX2 kernels for 5–8 columns too, where the CPU would take AVX-512's,
                // and the AVX-512 ones for 1–2 columns where it would not.
                let (mut avx2, mut wide) = (portable.clone(), portable.clone());
                #[cfg(target_arch = "x86_64")]
                if x86::available() {
                    let bits: &[u16] = bytemuck::cast_slice(&rows);
                    x86::dot_rows_f16_few_with(bits, 1..6, d, &cols, &mut avx2, (false, false));
                    if is_x86_feature_detected!("avx512f") {
                        let both = (true, true);
                        x86::dot_rows_f16_few_with(bits, 1..6, d, &cols, &mut wide, both);
                    }
                }
                for (i, k) in (1..6).enumerate() {
                    for (c, col) in cols.iter().enumerate() {
                        let terms =
                            (0..d).map(|j| f64::from(rows[k * d + j].to_f32()) * f64::from(col[j]));
                        let exact: f64 = terms.clone().sum();
                        let bound = gamma * terms.map(f64::abs).sum::<f64>();
                        let paths = [&fast, &portable, &avx2, &wide].map(|p| p[i * l + c]);
                        for got in paths {
                            assert!(
                                (f64::from(got) - exact).abs() <= bound,
                                "d {d}, {l} columns, row {k}, column {c}: {got} vs {exact}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn f16_row_kernels_agree_with_each_other_and_with_exact_sums() {
        let d = 77; // a tail after the 64- and 8-wide loops
        let rows: Vec<half::f16> = (0..3 * d)
            .map(|i| half::f16::from_f32(((i * 13) % 29) as f32 * 0.37 - 5.0))
            .collect();
        let col: Vec<f32> = (0..d).map(|i| (i as f32 * 0.11).cos()).collect();
        let (mut fast, mut portable) = ([0.0f32; 3], [0.0f32; 3]);
        dot_rows_f16(&rows, 0..3, d, &[&col], &mut fast);
        dot_rows_f16_portable(&rows, 0..3, d, &[&col], &mut portable);
        for k in 0..3 {
            let exact: f64 = (0..d)
                .map(|j| f64::from(rows[k * d + j].to_f32()) * f64::from(col[j]))
                .sum();
            let scale: f64 = (0..d)
                .map(|j| f64::from(rows[k * d + j].to_f32()).abs() * f64::from(col[j]).abs())
                .sum();
            for got in [fast[k], portable[k]] {
                assert!(
                    (f64::from(got) - exact).abs() <= 1e-5 * scale,
                    "{got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn kernels_agree_with_plain_sums() {
        for n in [0, 1, 7, 16, 17, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let q: Vec<i8> = (0..n).map(|i| ((i * 37) % 255) as i8).collect();
            let plain: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let b64: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
            assert!((dot_exact(&a, &b64) - plain).abs() <= 1e-12 * (1.0 + plain.abs()));
            assert!((f64::from(dot_f32(&a, &b)) - plain).abs() <= 1e-5 * (1.0 + plain.abs()));
            let plain_q: f64 = q
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!((f64::from(dot_i8(&q, &b)) - plain_q).abs() <= 1e-4 * (1.0 + plain_q.abs()));
        }
    }

    #[test]
    fn one_column_scores_are_the_formula_and_flag_scores_past_the_cuts() {
        let (c, q) = (5, 37); // a tail past any vector width
        let r: Vec<f64> = (0..c).map(|j| (j as f64 * 0.7).sin()).collect();
        let dots: Vec<f32> = (0..q).map(|i| (i as f32 * 0.3).cos()).collect();
        let coefs_t: Vec<f64> = (0..c * q).map(|i| (i as f64 * 0.37).sin()).collect();
        let table: Vec<f64> = (0..c * q).map(|i| (i as f64 * 0.11).cos()).collect();
        let want: Vec<f64> = (0..q)
            .map(|i| {
                let x = f64::from(dots[i]);
                -2.0 * (0..c)
                    .map(|j| r[j] * (x * coefs_t[j * q + i] + table[j * q + i]))
                    .sum::<f64>()
            })
            .collect();
        let mut out = vec![0.0; q];
        let wide = (vec![-1e9; q], vec![1e9; q]);
        let cuts = (wide.0.as_slice(), wide.1.as_slice());
        assert!(!one_column_scores(
            &r,
            &dots,
            (&coefs_t, &table),
            -2.0,
            cuts,
            &mut out
        ));
        for (got, want) in out.iter().zip(&want) {
            assert!(
                (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                "{got} vs {want}"
            );
        }
        // Only the last column's cuts let its score through.
        let mut narrow = wide.clone();
        narrow.1[q - 1] = want[q - 1] - 1e-6;
        let cuts = (narrow.0.as_slice(), narrow.1.as_slice());
        assert!(one_column_scores(
            &r,
            &dots,
            (&coefs_t, &table),
            -2.0,
            cuts,
            &mut out
        ));
    }

    #[test]
    fn grouped_scores_are_each_tokens_scores_to_the_bit() {
        // Every group size (1–8 tokens, the kernels for 1, 2, 4 and 8 padded), Q with and
        // without a tail past the vector width, against one_column_scores token by token.
        let c = 7;
        let wave = |n: usize, a: f64| (0..n).map(move |i| (i as f64 * a).sin());
        for q in [1, 8, 13, 37] {
            let coefs_t: Vec<f64> = wave(c * q, 0.37).collect();
            let table: Vec<f64> = wave(c * q, 0.11).map(|x| x - 0.3).collect();
            let rs: Vec<Vec<f64>> = (0..8)
                .map(|g| wave(c, 0.7 + 0.1 * g as f64).collect())
                .collect();
            let xs: Vec<Vec<f32>> = (0..8)
                .map(|g| wave(q, 0.3 + 0.05 * g as f64).map(|x| x as f32).collect())
                .collect();
            // Even tokens' scores 2000 times the odd ones': cuts just past the odd tokens'
            // largest score let only the even ones through.
            let factors: Vec<f64> = (0..8)
                .map(|g| if g % 2 == 0 { -20.0 } else { -0.01 })
                .collect();
            let mut want = vec![vec![0.0; q]; 8];
            let mut want_flags = 0u8;
            let never = (vec![f64::NEG_INFINITY; q], vec![f64::INFINITY; q]);
            for g in 0..8 {
                let cuts = (&never.0[..], &never.1[..]);
                one_column_scores(
                    &rs[g],
                    &xs[g],
                    (&coefs_t, &table),
                    factors[g],
                    cuts,
                    &mut want[g],
                );
            }
            let odd_max = (1..8)
                .step_by(2)
                .flat_map(|g| want[g].iter())
                .fold(0.0f64, |m, s| m.max(s.abs()));
            let (low, high) = (vec![-1.01 * odd_max; q], vec![1.01 * odd_max; q]);
            for g in 0..8 {
                let cuts = (&low[..], &high[..]);
                let outside = one_column_scores(
                    &rs[g],
                    &xs[g],
                    (&coefs_t, &table),
                    factors[g],
                    cuts,
                    &mut want[g],
                );
                want_flags |= u8::from(outside) << g;
            }
            assert_eq!(want_flags, 0b0101_0101, "q = {q}");
            for n in 1..=8 {
                let r: Vec<&[f64]> = rs[..n].iter().map(Vec::as_slice).collect();
                let x: Vec<&[f32]> = xs[..n].iter().map(Vec::as_slice).collect();
                let mut out = vec![f64::NAN; n * q];
                let flags = one_column_scores_group(
                    &r,
                    &x,
                    (&coefs_t, &table),
                    &factors[..n],
                    (&low, &high),
                    &mut out,
                );
                assert_eq!(flags, want_flags & (0xff >> (8 - n)), "n = {n}, q = {q}");
                for g in 0..n {
                    for i in 0..q {
                        assert_eq!(
                            out[g * q + i].to_bits(),
                            want[g][i].to_bits(),
                            "n {n} g {g} i {i}"
                        );
                    }
                }
            }
        }
    }

    /// A single query's per-token terms but `r`, for `n` tokens, `c` labels and `m` test
    /// columns: the dots (n × m), the classes all over the table, the coefficients (m × c) and
    /// the table.
    fn token_terms(n: usize, c: usize, m: usize) -> (Vec<f32>, Vec<u32>, Vec<f64>, Vec<f64>) {
        let classes_n = (c + 1) * (c + 1);
        let dots = (0..n * m).map(|i| (i as f32 * 0.3).cos() * 4.0).collect();
        let classes = (0..n).map(|i| ((i * 7) % classes_n) as u32).collect();
        let coefs = (0..m * c).map(|j| (j as f64 * 0.37).cos()).collect();
        let table = (0..classes_n * c)
            .map(|i| (i as f64 * 0.11).sin())
            .collect();
        (dots, classes, coefs, table)
    }

    #[test]
    fn token_raws_paths_agree_with_the_formula() {
        // Every label count around the 8-wide registers; 1–8 test columns (the AVX-512
        // kernels), 9 (the portable loop only).
        for (c, m) in (1..=17).flat_map(|c| (1..=9).map(move |m| (c, m))) {
            let n = 37;
            let r: Vec<f64> = (0..n * c).map(|i| (i as f64 * 0.61).sin()).collect();
            let (dots, classes, coefs, table) = token_terms(n, c, m);
            let want: Vec<f64> = (0..n)
                .map(|i| {
                    let x = |l: usize| f64::from(dots[i * m + l]);
                    let u = |j: usize| {
                        (0..m).map(|l| x(l) * coefs[l * c + j]).sum::<f64>()
                            + table[classes[i] as usize * c + j]
                    };
                    (0..c).map(|j| r[i * c + j] * u(j)).sum()
                })
                .collect();
            let (mut fast, mut portable) = (vec![f64::NAN; n], vec![f64::NAN; n]);
            let terms = TokenTerms {
                r: &r,
                classes: &classes,
                coefs: &coefs,
                columns: m,
                table: &table,
                skip: None,
            };
            token_raws(&terms, &dots, &mut fast);
            token_raws_portable(&terms, &dots, &mut portable);
            for i in 0..n {
                for got in [fast[i], portable[i]] {
                    assert!(
                        (got - want[i]).abs() <= 1e-12 * (1.0 + want[i].abs()),
                        "C = {c}, {m} columns, token {i}: {got} vs {}",
                        want[i]
                    );
                }
            }
        }
    }

    fn avx512() -> bool {
        #[cfg(target_arch = "x86_64")]
        return std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The scores from integer dots scaled as they are read equal, to the bit, the scores of
    /// the same dots scaled first ([`scaled_dot`]) — over 1–8 columns and label counts
    /// around the 8-wide registers; 9 columns and scales of another length are refused.
    #[test]
    fn scaled_token_raws_are_the_raws_of_the_scaled_dots() {
        use crate::int_kernels::SkipBelow;
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (c, m) in [1, 8, 9, 16, 17]
            .into_iter()
            .flat_map(|c| (1..=9).map(move |m| (c, m)))
        {
            let n = 45;
            let r: Vec<f64> = (0..n * c).map(|i| (i as f64 * 0.61).sin()).collect();
            let (_, classes, coefs, table) = token_terms(n, c, m);
            let ints: Vec<i32> = (0..n * m)
                .map(|i| (i as i32 * 7919) % 200_003 - 100_000)
                .collect();
            let row_scales: Vec<f32> = (0..n).map(|i| 1e-4 * (1.0 + i as f32 * 0.37)).collect();
            let col_scales: Vec<f64> = (0..m).map(|l| 3e-3 / (1.0 + l as f64)).collect();
            let dots: Vec<f32> = (0..n * m)
                .map(|i| scaled_dot(ints[i], row_scales[i / m], col_scales[i % m]))
                .collect();
            // Without the skip test, and with one that leaves some tokens out (its terms need
            // not bound anything here: both paths must apply it alike; the kernels test it for
            // C ≤ 16).
            let (norms, table_norms, coef_norms) = (vec![0.5f32; n], vec![1.0f32; n], vec![1.0; m]);
            let coef_gram: Vec<f64> = (0..m * m)
                .map(|i| f64::from(u8::from(i % (m + 1) == 0)))
                .collect();
            let skip = SkipBelow {
                norms: &norms,
                coef_norms: &coef_norms,
                coef_gram: &coef_gram,
                table_norms: &table_norms,
                below: 0.6,
            };
            for skip in [None, Some(skip)] {
                let terms = TokenTerms {
                    r: &r,
                    classes: &classes,
                    coefs: &coefs,
                    columns: m,
                    table: &table,
                    skip,
                };
                let (mut want, mut got) = (vec![f64::NAN; n], vec![f64::NAN; n]);
                token_raws(&terms, &dots, &mut want);
                let scaled = (&ints[..], &row_scales[..], &col_scales[..]);
                let ran = token_raws_scaled(&terms, scaled, &mut got);
                assert_eq!(ran, m <= 8 && avx512(), "C = {c}, {m} columns");
                if ran {
                    assert_eq!(bits(&got), bits(&want), "C = {c}, {m} columns");
                    let short = (&ints[..], &row_scales[..], &col_scales[1..]);
                    assert!(!token_raws_scaled(&terms, short, &mut got), "M - 1 scales");
                }
                if skip.is_some() && m <= 8 && c <= 16 {
                    let kept = want.iter().filter(|&&w| w != 0.0).count();
                    assert!(
                        kept > 0 && kept < n,
                        "C = {c}, {m} columns: {kept} of {n} kept"
                    );
                }
            }
        }
    }

    /// With [`crate::int_kernels::SkipBelow`], a token's raw score is its full score, or 0
    /// only when its Cauchy–Schwarz bound (recomputed here) lies below the cut. Cuts from
    /// none skipped to all skipped; the bench-like middle mixes whole skipped groups with
    /// groups whose few needed tokens are scored in gathered groups of 8 and a remainder.
    #[test]
    fn skipped_scores_are_exact_or_provably_below_the_cut() {
        use crate::int_kernels::{f32_at_least, SkipBelow};
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        // Tokens left out although the triangle inequality's bound reaches the cut (the
        // exact norm of Σ_l x_l·c_l at work), over every case with several columns.
        let mut by_exact_norm = 0;
        // And although the largest table row's norm would have kept them.
        let mut by_own_row = 0;
        for (c, m) in [1, 3, 8, 9, 16, 17]
            .into_iter()
            .flat_map(|c| (1..=8).map(move |m| (c, m)))
        {
            let n = 203;
            // Spiky r: most rows small (as a trained model's), a few large.
            let r: Vec<f64> = (0..n * c)
                .map(|i| (i as f64 * 0.61).sin() * if (i / c) % 7 == 3 { 1.0 } else { 0.01 })
                .collect();
            let (dots, classes, coefs, table) = token_terms(n, c, m);
            let norms: Vec<f32> = r.chunks_exact(c).map(|r| norm(r) as f32 * 1.0001).collect();
            let cols: Vec<&[f64]> = coefs.chunks_exact(c).collect();
            let coef_norms: Vec<f64> = cols.iter().map(|c| norm(c)).collect();
            let coef_gram: Vec<f64> = (cols.iter())
                .flat_map(|a| {
                    cols.iter()
                        .map(|b| a.iter().zip(*b).map(|(x, y)| x * y).sum())
                })
                .collect();
            let table_norm = table.chunks_exact(c).map(norm).fold(0.0, f64::max);
            let row_norm = |i: usize| {
                let p = classes[i] as usize;
                norm(&table[p * c..(p + 1) * c])
            };
            let table_norms: Vec<f32> = (0..n).map(|i| f32_at_least(row_norm(i))).collect();
            let mut full = vec![f64::NAN; n];
            let terms = |skip| TokenTerms {
                r: &r,
                classes: &classes,
                coefs: &coefs,
                columns: m,
                table: &table,
                skip,
            };
            token_raws(&terms(None), &dots, &mut full);
            let x = |i: usize, l: usize| f64::from(dots[i * m + l]);
            // Cauchy–Schwarz with the exact ‖Σ_l x_l·c_l‖, and with the triangle inequality.
            let bound_with = |i: usize, table_norm: f64| {
                let u: Vec<f64> = (0..c)
                    .map(|j| (0..m).map(|l| x(i, l) * cols[l][j]).sum())
                    .collect();
                f64::from(norms[i]) * (norm(&u) + table_norm)
            };
            let bound = |i: usize| bound_with(i, f64::from(table_norms[i]));
            let loose = |i: usize| {
                let slope = (0..m).map(|l| x(i, l).abs() * coef_norms[l]);
                f64::from(norms[i]) * (slope.sum::<f64>() + f64::from(table_norms[i]))
            };
            // With the largest table row's norm for every token instead of its own.
            let largest = |i: usize| bound_with(i, table_norm);
            let mut skipped_counts = Vec::new();
            for below in [-1.0, 0.0, 0.05, 0.3, 1.0, 1e9] {
                let skip = SkipBelow {
                    norms: &norms,
                    coef_norms: &coef_norms,
                    coef_gram: &coef_gram,
                    table_norms: &table_norms,
                    below,
                };
                let mut out = vec![f64::NAN; n];
                token_raws(&terms(Some(skip)), &dots, &mut out);
                let mut skipped = 0;
                for i in 0..n {
                    assert!(
                        full[i].abs() <= bound(i) * (1.0 + 1e-12) && bound(i) <= loose(i) * 1.0001,
                        "C = {c}: the bounds themselves"
                    );
                    if (out[i] - full[i]).abs() <= 1e-12 * (1.0 + full[i].abs()) {
                        continue;
                    }
                    assert!(
                        out[i] == 0.0 && bound(i) < below,
                        "C = {c}, {m} columns, below {below}, token {i}: {} vs {} (bound {})",
                        out[i],
                        full[i],
                        bound(i)
                    );
                    skipped += 1;
                    by_exact_norm += usize::from(loose(i) >= below);
                    by_own_row += usize::from(largest(i) >= below);
                }
                skipped_counts.push(skipped);
            }
            if cfg!(target_arch = "x86_64") && is_x86_feature_detected!("avx512f") && c <= 16 {
                // Nothing below a cut of 0 or less; some but not all at a cut in between; past
                // the bounds, all but the last n mod 8 tokens (scored one by one).
                assert_eq!(&skipped_counts[..2], &[0, 0], "C = {c}, {m} columns");
                let some = skipped_counts.iter().any(|&k| k > 0 && k < n);
                assert!(some, "C = {c}, {m} columns: {skipped_counts:?}");
                let all = (0..n - n % 8).filter(|&i| full[i] != 0.0).count();
                assert_eq!(skipped_counts[5], all, "C = {c}, {m} columns");
            }
        }
        if cfg!(target_arch = "x86_64") && is_x86_feature_detected!("avx512f") {
            assert!(by_exact_norm > 0, "the exact norm never left a token out");
            assert!(
                by_own_row > 0,
                "the tokens' own table rows never left one out"
            );
        }
    }

    #[test]
    fn half_conversion_is_exact_for_every_finite_half() {
        for bits in 0..=u16::MAX {
            if (bits >> 10) & 0x1f == 0x1f {
                continue; // inf/NaN: refused at build, never stored
            }
            let want = half::f16::from_bits(bits).to_f32();
            let got = f16_to_f32(bits);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} vs {want}"
            );
        }
    }
}
