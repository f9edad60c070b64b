//! Exact integer dot products of int8 index rows (or an f32/f16 index's i16 ranking copy) with
//! i16 query columns (the caller quantises the queries and applies the scales): a packed GEMM
//! for batches ([`gemm`]) and a streaming kernel for a few columns ([`dot_rows_i8_i16`]). AVX-512 VNNI (`vpdpwssd`, 32
//! multiply-adds per instruction) or AVX2 (`vpmaddwd` + `vpaddd`) intrinsics when the CPU has
//! them (module `x86`), portable loops elsewhere.
//!
//! Every path sums in i32 with wrapping adds, so all of them return the exact sum modulo 2^32
//! whatever the summation order: bit-identical results, and the exact sum itself whenever it
//! fits in i32 (the caller's `R·U·d < 2^31` for rows within ±R, columns within ±U). A product
//! of two i16 always fits, and so does a `vpdpwssd` pair unless both are (−2¹⁵)·(−2¹⁵).
//!
//! The streaming kernels (and `kernels`' f16 and int8 ones) ask for the rows ahead of the
//! one they read ([`prefetch_ahead`]).

use std::sync::atomic::{AtomicBool, Ordering};

/// The rows of a GEMM: an int8 index's values, or i16 values (an f32/f16 index's ranking
/// copy). Either way the kernels read them as i16 (int8 widened once per k-block).
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    I8(&'a [i8]),
    I16(&'a [i16]),
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Rows::I8(r) => r.len(),
            Rows::I16(r) => r.len(),
        }
    }

    fn get(&self, j: usize) -> i32 {
        match self {
            Rows::I8(r) => i32::from(r[j]),
            Rows::I16(r) => i32::from(r[j]),
        }
    }
}

/// Columns per vector group of the packed layout (one zmm of i32 lanes).
const LANES: usize = 16;
/// Vector groups per column tile: the micro-kernel's 48 columns.
const TILE_VECS: usize = 3;
/// Rows per micro-tile (8 × 3 = 24 accumulators, 3 for B and a broadcast of 32 zmm).
const MR: usize = 8;
/// The most k per block (even). A whole d = 768 measured fastest on Zen 4 (104 GMAC/s at
/// L = 300, 99 at L = 64, against 99 and 85 for 192): a tile's B micro-panel (48 × 768 i16,
/// 72 KiB) streams from L2 at 3 zmm per 24 `vpdpwssd`, and no k-block reloads the outputs.
const KC: usize = 768;

/// Whether the AVX-512 VNNI kernels can run on this CPU (avx512f + avx512bw + avx512vnni;
/// cached by std after the first check).
#[cfg_attr(not(test), allow(dead_code))] // for the tests and benches/int_kernels.rs
pub fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::vnni()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the streaming kernels read the rows of one- and two-column scans in pairs (as they
/// do for 3–8 columns), and a single token's int8 scan computes its dots and scores in two
/// passes rather than [`dot_score_rows`]' one: on Intel CPUs. Both cores, 200k rows of
/// d = 768, a Xeon with AVX-512 (session 12): int8 2-token queries' dots took 11.8–12.4 ms
/// of thread time in pairs against 13.9–14.8 a row at a time, single tokens 11.2–13.2 ms of
/// scan in two passes against 13.5–14.3 fused, and f16 single tokens' dots 23.2–23.4 ms
/// through the AVX-512 pair kernel against 30.2–30.8 through the AVX2 row kernel. On AMD
/// Zen 4 (sessions 9–11) pairs measured no better for two columns and the fused kernel was
/// the faster single-token scan, so other CPUs keep those.
pub fn pairs_for_few_columns() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static INTEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *INTEL.get_or_init(x86::intel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether both kernels have intrinsic paths on this CPU (AVX-512 VNNI or AVX2): then they
/// beat decoding int8 rows to f32 for OpenBLAS sgemm or the f32 streaming kernels (the
/// portable loops do not).
pub fn intrinsics_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::vnni() || x86::avx2()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// How far ahead of the row being read the streaming scans ask for the rows to come. The
/// hardware prefetcher alone keeps too few lines in flight once a row's work is more than a
/// sum (the fused int8 kernel on both cores streamed 58–76 % of a plain read's rate without
/// this, 83–92 % with it, `benches/int_kernels.rs`; 1–6 KB ahead into L1 gave nothing):
/// 32 KiB is ~40 int8 or 20 f16 rows at d = 768, far less than L2.
pub const PREFETCH_AHEAD: usize = 32 << 10;

/// Whether [`prefetch_ahead`] asks for anything (on unless a bench turns it off to measure it).
static PREFETCH: AtomicBool = AtomicBool::new(true);

/// Turns [`prefetch_ahead`] on or off (for `benches/int_kernels.rs`).
#[cfg_attr(not(test), allow(dead_code))]
pub fn set_prefetch(on: bool) {
    PREFETCH.store(on, Ordering::Relaxed);
}

/// Asks the CPU to bring the cache lines of `values` into L2 (a hint; nothing on other
/// architectures): for scattered reads whose misses would otherwise come one by one.
#[inline]
pub fn prefetch<T>(values: &[T]) {
    #[cfg(target_arch = "x86_64")]
    if !values.is_empty() {
        // From the start of the first value's line, one prefetch per line.
        let into_line = values.as_ptr() as usize % 64;
        let first_line = values.as_ptr().cast::<u8>().wrapping_sub(into_line);
        for offset in (0..into_line + std::mem::size_of_val(values)).step_by(64) {
            x86::prefetch_l2(first_line.wrapping_add(offset));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// Asks the CPU to bring the cache lines of `[p + PREFETCH_AHEAD, p + PREFETCH_AHEAD + len)`
/// into L2 (a hint: never faults, whatever the address; nothing on other architectures).
#[inline(always)]
pub fn prefetch_ahead(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if PREFETCH.load(Ordering::Relaxed) {
        let start = p.wrapping_add(PREFETCH_AHEAD);
        for offset in (0..len).step_by(64) {
            x86::prefetch_l2(start.wrapping_add(offset));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// How far ahead a loop that does little more than read asks for one line in eight
/// ([`prefetch_sparse_ahead`]): the fastest plain read of this host does so (BENCHMARKS.md,
/// session 17), where the hardware prefetchers alone fall 4–12 % short and a prefetch a line
/// costs a read more than it gives.
pub const SPARSE_AHEAD: usize = 16 << 10;

/// Asks the CPU to bring the cache line [`SPARSE_AHEAD`] bytes past `p` into L2 (a hint, as
/// [`prefetch_ahead`]), for a loop that calls it on every 8th line it reads.
#[inline(always)]
pub fn prefetch_sparse_ahead(p: *const u8) {
    ask_line(p.wrapping_add(SPARSE_AHEAD));
}

/// Asks the CPU to bring the one cache line `PREFETCH_AHEAD` bytes past `p` into L2 (a hint,
/// as [`prefetch_ahead`]): for the kernels that read two rows side by side and ask for each
/// line as they step through them, rather than for a whole row's lines at once.
#[inline(always)]
pub fn prefetch_line_ahead(p: *const u8) {
    ask_line(p.wrapping_add(PREFETCH_AHEAD));
}

/// The line holding `p` into L2 unless a bench turned the asks off (nothing on other
/// architectures).
#[inline(always)]
fn ask_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    if PREFETCH.load(Ordering::Relaxed) {
        x86::prefetch_l2(p);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Query columns (L × d, row-major i16) packed once for [`gemm`]: column tiles of 48
/// (the last one 16 or 32 when `L` leaves fewer), each holding for every k-pair `(2p, 2p+1)`
/// its vector groups of 16 columns as interleaved i16 pairs (`vpdpwssd`'s operand layout),
/// zero-padded to whole groups and an even `d`.
pub struct PackedCols {
    data: Vec<i16>,
    l: usize,
    d: usize,
}

impl PackedCols {
    /// Packs `cols` (`l` rows of `d`). Panics when `cols.len() != l * d`.
    pub fn new(cols: &[i16], l: usize, d: usize) -> PackedCols {
        assert_eq!(
            cols.len(),
            l * d,
            "PackedCols::new: cols must hold l × d values"
        );
        let kp = d.div_ceil(2);
        let mut data = vec![0i16; l.div_ceil(LANES) * LANES * kp * 2];
        for (t, nv) in tiles(l) {
            let base = t * kp * TILE_VECS * LANES * 2;
            for p in 0..kp {
                for v in 0..nv {
                    for c in 0..LANES {
                        let j = t * TILE_VECS * LANES + v * LANES + c;
                        for h in 0..2 {
                            let k = 2 * p + h;
                            if j < l && k < d {
                                data[base + (p * nv + v) * 2 * LANES + 2 * c + h] = cols[j * d + k];
                            }
                        }
                    }
                }
            }
        }
        PackedCols { data, l, d }
    }

    /// The number of columns `L`.
    pub fn num_cols(&self) -> usize {
        self.l
    }

    /// The dimension `d` of each column.
    pub fn dim(&self) -> usize {
        self.d
    }
}

/// The column tiles of `l` columns: `(index, vector groups)`, 3 groups but the last.
fn tiles(l: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..l.div_ceil(TILE_VECS * LANES)).map(move |t| (t, tile_vecs(l, t)))
}

/// The vector groups of tile `t`.
fn tile_vecs(l: usize, t: usize) -> usize {
    (l.div_ceil(LANES) - t * TILE_VECS).min(TILE_VECS)
}

/// The rows in `rows` (`rows.len() / d`, none when `d == 0`), after checking the shapes that
/// the kernels rely on.
fn gemm_shape(rows: Rows, d: usize, cols: &PackedCols, out: &[i32]) -> usize {
    assert_eq!(d, cols.d, "gemm: rows and columns differ in dimension");
    let rb = rows.len().checked_div(d).unwrap_or(0);
    assert!(
        out.len() >= rb * cols.l,
        "gemm: out holds fewer than rows × L values"
    );
    rb
}

/// As [`gemm_shape`] for [`dot_rows_i8_i16`].
fn dot_shape(rows: &[i8], d: usize, cols: &[&[i16]], out: &[i32]) -> usize {
    assert!(
        cols.iter().all(|c| c.len() == d),
        "dot_rows_i8_i16: every column must hold d values"
    );
    let rb = rows.len().checked_div(d).unwrap_or(0);
    assert!(
        out.len() >= rb * cols.len(),
        "dot_rows_i8_i16: out holds fewer than rows × L values"
    );
    rb
}

/// `out[i*L + l] = Σ_j rows[i*d + j]·cols[l][j]` (exact, i32) for the `rb = rows.len() / d`
/// rows (row-major, d per row). `out.len() >= rb * L`. `scratch` is caller-owned reusable
/// memory (the row panels, widened from int8), so repeated calls allocate nothing.
pub fn gemm(rows: Rows, d: usize, cols: &PackedCols, out: &mut [i32], scratch: &mut Vec<i16>) {
    #[cfg(target_arch = "x86_64")]
    if x86::gemm_vnni(rows, d, cols, out, scratch) || x86::gemm_avx2(rows, d, cols, out, scratch) {
        return;
    }
    let _ = scratch;
    gemm_portable(rows, d, cols, out);
}

/// As [`gemm`] without intrinsics: CPUs without AVX2, other architectures. Walks the
/// packed layout as the kernels do (a row against one column tile at a time, in a buffer of
/// 48 sums), so that LLVM vectorises the inner loop over the tile's columns.
pub(crate) fn gemm_portable(rows: Rows, d: usize, cols: &PackedCols, out: &mut [i32]) {
    let rb = gemm_shape(rows, d, cols, out);
    let (l, kp) = (cols.l, d.div_ceil(2));
    for i in 0..rb {
        for (t, nv) in tiles(l) {
            let width = nv * LANES;
            let panel = &cols.data[t * kp * TILE_VECS * LANES * 2..][..kp * width * 2];
            let mut acc = [0i32; TILE_VECS * LANES];
            for (p, b) in panel.chunks_exact(width * 2).enumerate() {
                let a0 = rows.get(i * d + 2 * p);
                let a1 = if 2 * p + 1 < d {
                    rows.get(i * d + 2 * p + 1)
                } else {
                    0
                };
                for (x, b) in acc.iter_mut().zip(b.chunks_exact(2)) {
                    *x = x
                        .wrapping_add(a0 * i32::from(b[0]))
                        .wrapping_add(a1 * i32::from(b[1]));
                }
            }
            let j0 = t * TILE_VECS * LANES;
            let n = width.min(l - j0);
            out[i * l + j0..][..n].copy_from_slice(&acc[..n]);
        }
    }
}

/// The same for a few columns without packing, streaming the rows once (single queries):
/// `out[i*L + l] = rows_i · cols[l]` with `L = cols.len()`, each `cols[l].len() == d`. Meant
/// for 1..=4 columns; more are taken 4 at a time (the rows read again for each 4).
pub fn dot_rows_i8_i16(rows: &[i8], d: usize, cols: &[&[i16]], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::dot_rows_vnni(rows, d, cols, out) || x86::dot_rows_avx2(rows, d, cols, out) {
        return;
    }
    dot_rows_i8_i16_portable(rows, d, cols, out);
}

/// A single query's per-token terms (DESIGN.md §3, `kernels::token_raws`): token `i`'s raw
/// score is `Σ_j r[i,j]·(Σ_l x_il·coefs[l,j] + table[classes[i], j])` where `x_il` are its
/// ranking dots with the segment's `columns` test columns (one for a single-token segment).
pub struct TokenTerms<'a> {
    /// rows × C.
    pub r: &'a [f64],
    pub classes: &'a [u32],
    /// The test columns' coefficients, columns × C.
    pub coefs: &'a [f64],
    pub columns: usize,
    /// (C+1)² × C.
    pub table: &'a [f64],
    /// Lets the kernels leave out tokens whose score cannot reach a keeper ([`SkipBelow`]).
    pub skip: Option<SkipBelow<'a>>,
}

/// Tokens whose raw score is certainly small: with `norms[i] ≥ w_i·‖r_i‖` for a weight
/// `w_i ≥ 0` of the caller's (1, or one over the token's gradient norm when it normalises the
/// scores), `table_norms[i]` ≥ the norm of token i's table row (its pair class's) and
/// `coef_gram` the M × M Gram matrix of the coefficient vectors (`G[l][m] =
/// coefs[l]·coefs[m]`, `coef_norms[l] = √G[l][l]`), Cauchy–Schwarz gives
/// `w_i·|raw_i| ≤ norms[i]·(‖Σ_l x_il·coefs[l]‖ + table_norms[i])`, and the
/// kernels bound `‖Σ_l x_il·coefs[l]‖` by the smaller of `S_i = Σ_l |x_il|·coef_norms[l]` (the
/// triangle inequality) and `√(x_iᵀ G x_i + 10⁻¹²·S_i²)` (the exact norm, with room for the
/// rounding of G and of the quadratic form, both a few units of 2⁻⁵³·S_i²): that is `B_i`.
/// A kernel may write 0 instead of `raw_i` for a token with `B_i < below` (computed in floating
/// point: the caller leaves room for rounding in `below`); a caller sets `below` inside the
/// keepers' cuts, so that both values are refused alike. Most tokens of a single query are
/// such (86 % on the bench's random index): their O(C) scoring was a sixth of an int8 query's
/// time. For a segment of several tokens the exact norm matters: with the triangle
/// inequality alone, half the tokens of a 3-token query on the bench were scored.
#[derive(Clone, Copy)]
pub struct SkipBelow<'a> {
    /// Per token, at least `w_i·‖r_i‖`.
    pub norms: &'a [f32],
    /// Per test column.
    pub coef_norms: &'a [f64],
    /// M × M, row-major.
    pub coef_gram: &'a [f64],
    /// Per token, at least the norm of its table row (its class's): with the largest row's
    /// norm for every token, 13.4 / 19.9 / 38.4 % of a 1- / 3- / 8-token query's tokens
    /// were scored on the bench, with the token's own 9.9 / 16.7 / 32.0 % (session 11).
    pub table_norms: &'a [f32],
    pub below: f64,
}

/// The smallest f32 at least `v` (bounds stored in f32 stay bounds).
pub fn f32_at_least(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) < v {
        f.next_up()
    } else {
        f
    }
}

impl TokenTerms<'_> {
    /// C, the label count.
    pub fn labels(&self) -> usize {
        self.coefs.len() / self.columns.max(1)
    }

    /// Panics unless the terms cover `rows` tokens: their `r` rows, their classes, and each
    /// class's table row (what the kernels read through raw pointers).
    pub fn check(&self, rows: usize, what: &str) {
        let c = self.labels();
        assert!(
            self.columns > 0
                && self.coefs.len() == self.columns * c
                && self.r.len() >= rows * c
                && self.classes.len() >= rows
                && self.skip.is_none_or(|skip| {
                    skip.norms.len() >= rows
                        && skip.table_norms.len() >= rows
                        && skip.coef_norms.len() == self.columns
                        && skip.coef_gram.len() == self.columns * self.columns
                }),
            "{what}: shapes differ"
        );
        assert!(
            self.classes[..rows]
                .iter()
                .all(|&p| (p as usize + 1) * c <= self.table.len()),
            "{what}: a class past the table"
        );
    }
}

/// The ranking dots of int8 rows (scales `row_scales`) with one i16 column (`col ≈ scale·u`)
/// and the tokens' raw scores from them in one pass: `out[i] = raw_i` with
/// `x_i = fl32(dot_i · (s_i · scale))` as [`dot_rows_i8_i16`]'s callers compute it. Fused so
/// that each row's O(C) scoring runs while the next rows stream in (as a separate pass it
/// took a fifth of a single query's time, bound by instructions, not memory). `false`
/// (doing nothing) without AVX-512 VNNI. Panics when a shape does not match.
pub fn dot_score_rows(
    rows: &[i8],
    row_scales: &[f32],
    d: usize,
    (col, scale): (&[i16], f64),
    terms: &TokenTerms,
    out: &mut [f64],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::dot_score_vnni(rows, row_scales, d, (col, scale), terms, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, row_scales, d, col, scale, terms, out);
        false
    }
}

/// As [`dot_rows_i8_i16`] without intrinsics: CPUs without AVX2, other architectures.
pub(crate) fn dot_rows_i8_i16_portable(rows: &[i8], d: usize, cols: &[&[i16]], out: &mut [i32]) {
    let rb = dot_shape(rows, d, cols, out);
    let l = cols.len();
    for (row, o) in rows
        .chunks_exact(d.max(1))
        .zip(out.chunks_mut(l.max(1)))
        .take(rb)
    {
        for (x, col) in o.iter_mut().zip(cols) {
            *x = dot_portable(row, col);
        }
    }
}

/// `Σ_j a_j b_j` with wrapping i32 sums (16 partial sums, which LLVM vectorises).
fn dot_portable(a: &[i8], b: &[i16]) -> i32 {
    let mut acc = [0i32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] = acc[i].wrapping_add(i32::from(x[i]) * i32::from(y[i]));
        }
    }
    let tail = ar.iter().zip(br).fold(0i32, |s, (&x, &y)| {
        s.wrapping_add(i32::from(x) * i32::from(y))
    });
    acc.iter().fold(tail, |s, &x| s.wrapping_add(x))
}

/// x86_64 kernels with intrinsics, behind run-time CPU checks: each safe entry point returns
/// `false` (doing nothing) when the CPU lacks its features, and checks the shapes before any
/// raw-pointer access.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::{
        dot_shape, gemm_shape, tiles, PackedCols, Rows, SkipBelow, TokenTerms, KC, LANES, MR,
        TILE_VECS,
    };

    /// `prefetcht1` of the line holding `p`.
    #[inline(always)]
    pub fn prefetch_l2(p: *const u8) {
        // SAFETY: SSE is part of x86_64's baseline; a prefetch reads nothing and never
        // faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) };
    }

    /// `prefetcht0` of the line holding `p`.
    #[inline(always)]
    pub fn prefetch_l1(p: *const u8) {
        // SAFETY: as `prefetch_l2`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }

    /// AVX-512 F + BW + VNNI: all that the `vnni` kernels are compiled for (cached by std).
    pub fn vnni() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }

    /// AVX2: all that the `avx2` kernels are compiled for.
    pub fn avx2() -> bool {
        is_x86_feature_detected!("avx2")
    }

    /// Whether CPUID's vendor string is "GenuineIntel".
    pub fn intel() -> bool {
        let r = __cpuid(0);
        let vendor: Vec<u8> = [r.ebx, r.edx, r.ecx]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        vendor == b"GenuineIntel"
    }

    /// A GEMM body: rows, d, rb, the packed columns, out, and scratch for rb rounded up to
    /// its micro-tile's rows × KC widened values.
    type GemmKernel = unsafe fn(Rows, usize, usize, &PackedCols, &mut [i32], &mut [i16]);

    /// A widening of int8 values to i16 ([`widen`], [`widen_avx2`]): `src`, n, `dst`, n_pad.
    type Widen = unsafe fn(*const i8, usize, *mut i16, usize);

    /// Row `i`'s values `[k0, k0 + kw)` as i16 into `dst[..n_pad]`, zeros after them; a row
    /// past `rb` (padding to the micro-tile) all zeros.
    ///
    /// # Safety
    /// `widen`'s CPU features are present; `kw ≤ n_pad`, `k0 + kw ≤ d`, and `dst` is valid
    /// for `n_pad` writes.
    unsafe fn panel_row(
        rows: Rows,
        widen: Widen,
        (i, rb, d): (usize, usize, usize),
        (k0, kw): (usize, usize),
        dst: *mut i16,
        n_pad: usize,
    ) {
        let (start, n) = if i < rb { (i * d + k0, kw) } else { (0, 0) };
        // SAFETY: row i < rb spans [i·d, i·d + d) ⊇ [start, start + n); dst holds n_pad ≥ n.
        unsafe {
            match rows {
                Rows::I8(r) => widen(r.as_ptr().add(start), n, dst, n_pad),
                Rows::I16(r) => {
                    std::ptr::copy_nonoverlapping(r.as_ptr().add(start), dst, n);
                    std::ptr::write_bytes(dst.add(n), 0, n_pad - n);
                }
            }
        }
    }

    /// [`super::gemm`] with AVX-512 VNNI; `false` without it.
    pub fn gemm_vnni(
        rows: Rows,
        d: usize,
        cols: &PackedCols,
        out: &mut [i32],
        scratch: &mut Vec<i16>,
    ) -> bool {
        vnni() && gemm_with((gemm_vnni_impl, MR), rows, d, cols, out, scratch)
    }

    /// [`super::gemm`] with AVX2; `false` without it.
    pub fn gemm_avx2(
        rows: Rows,
        d: usize,
        cols: &PackedCols,
        out: &mut [i32],
        scratch: &mut Vec<i16>,
    ) -> bool {
        avx2() && gemm_with((gemm_avx2_impl, MR_AVX2), rows, d, cols, out, scratch)
    }

    /// Checks the shapes, sizes `scratch` and runs `kernel` (micro-tiles of `mr` rows), whose
    /// CPU features the caller checked.
    fn gemm_with(
        (kernel, mr): (GemmKernel, usize),
        rows: Rows,
        d: usize,
        cols: &PackedCols,
        out: &mut [i32],
        scratch: &mut Vec<i16>,
    ) -> bool {
        let rb = gemm_shape(rows, d, cols, out);
        if rb == 0 || cols.l == 0 {
            return true;
        }
        let rb_pad = rb.next_multiple_of(mr);
        if scratch.len() < rb_pad * KC {
            scratch.resize(rb_pad * KC, 0);
        }
        // SAFETY: the kernel's features were checked by the callers; `gemm_shape` checked
        // `rows` (rb × d), `out` (rb × L) and the packing's d, and `scratch` holds rb_pad × KC
        // with rb_pad a multiple of the kernel's micro-tile rows.
        unsafe { kernel(rows, d, rb, cols, out, scratch) };
        true
    }

    /// Output of one micro-tile: `rows` (≤ MR) rows at stride `ld` from `ptr`, the columns of
    /// vector group `v` selected by `masks[v]`; added to what is there when `accumulate`.
    struct CTile<const NV: usize> {
        ptr: *mut i32,
        ld: usize,
        rows: usize,
        masks: [__mmask16; NV],
        accumulate: bool,
    }

    /// The blocked GEMM: for each k-block, widen the rows' block into `scratch` (rows at
    /// stride KC, zero-padded to MR rows and to the block's pairs), then for each column tile
    /// (its B micro-panel read again by every row tile, from L2) run the micro-kernel down
    /// the row tiles.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn gemm_vnni_impl(
        rows: Rows,
        d: usize,
        rb: usize,
        cols: &PackedCols,
        out: &mut [i32],
        scratch: &mut [i16],
    ) {
        let (l, kp) = (cols.l, d.div_ceil(2));
        let rb_pad = rb.next_multiple_of(MR);
        let (a, b, c) = (scratch.as_mut_ptr(), cols.data.as_ptr(), out.as_mut_ptr());
        // Blocks of equal size: d = 777 makes two of 389 pairs, not 384 and 5.
        let bp = kp.div_ceil(kp.div_ceil(KC / 2));
        for kb in (0..kp).step_by(bp) {
            let np = (kp - kb).min(bp);
            let (k0, kw) = (2 * kb, (d - 2 * kb).min(2 * np));
            for i in 0..rb_pad {
                // SAFETY: k0 + kw ≤ d and kw ≤ 2np; the scratch row spans [i*KC, i*KC + 2np)
                // with 2np ≤ KC and i < rb_pad; this function has `widen`'s features.
                unsafe { panel_row(rows, widen, (i, rb, d), (k0, kw), a.add(i * KC), 2 * np) };
            }
            for (t, nv) in tiles(l) {
                let j0 = t * TILE_VECS * LANES;
                // SAFETY: the tile's packed panel starts at t·kp·96 and holds kp pairs of nv
                // groups of 32 i16; pair kb is in it.
                let bt = unsafe { b.add(t * kp * TILE_VECS * LANES * 2 + kb * nv * 2 * LANES) };
                let mask = |v: usize| -> __mmask16 {
                    let valid = (l - (j0 + v * LANES).min(l)).min(LANES);
                    ((1u32 << valid) - 1) as __mmask16
                };
                for i0 in (0..rb_pad).step_by(MR) {
                    // SAFETY: rows i0..i0 + MR of the scratch are packed; the C tile's rows
                    // i0 + r < rb and masked columns j0 + 16v + c < L lie in out[..rb·L].
                    unsafe {
                        let (at, ct) = (a.add(i0 * KC), c.add(i0 * l + j0));
                        let (rows, accumulate) = ((rb - i0).min(MR), kb > 0);
                        match nv {
                            3 => micro::<3>(np, at, bt, &tile(ct, l, rows, accumulate, mask)),
                            2 => micro::<2>(np, at, bt, &tile(ct, l, rows, accumulate, mask)),
                            _ => micro::<1>(np, at, bt, &tile(ct, l, rows, accumulate, mask)),
                        }
                    }
                }
            }
        }
    }

    /// A [`CTile`] with the masks of its `NV` groups.
    fn tile<const NV: usize>(
        ptr: *mut i32,
        ld: usize,
        rows: usize,
        accumulate: bool,
        mask: impl Fn(usize) -> __mmask16,
    ) -> CTile<NV> {
        CTile {
            ptr,
            ld,
            rows,
            masks: std::array::from_fn(mask),
            accumulate,
        }
    }

    /// `dst[..n_pad] = widen(src[..n])`, zeros after `n` (`n ≤ n_pad`): 32 values per
    /// `vpmovsxbw`, the tail with masked loads and stores.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn widen(src: *const i8, n: usize, dst: *mut i16, n_pad: usize) {
        let mut j = 0;
        // SAFETY: loads read src[j..j + 32] with j + 32 ≤ n, stores write dst[j..j + 32]
        // with j + 32 ≤ n_pad; the tail's masks cover src[j..n] and dst[j..n_pad] only.
        unsafe {
            while j + 32 <= n {
                let x = _mm512_cvtepi8_epi16(_mm256_loadu_si256(src.add(j).cast()));
                _mm512_storeu_si512(dst.add(j).cast(), x);
                j += 32;
            }
            while j < n_pad {
                let load = if n > j { lane_mask(n - j) } else { 0 };
                let x = _mm512_maskz_loadu_epi8(load, src.add(j));
                let x = _mm512_cvtepi8_epi16(_mm512_castsi512_si256(x));
                _mm512_mask_storeu_epi16(dst.add(j), lane_mask(n_pad - j) as __mmask32, x);
                j += 32;
            }
        }
    }

    /// The mask of the first `min(n, 32)` lanes (of fewer lanes: cast it to their mask type).
    pub(crate) fn lane_mask(n: usize) -> u64 {
        (1u64 << n.min(32)) - 1
    }

    /// The 8 × 16·NV micro-kernel over `np` k-pairs: row r's pair p is the i32 at
    /// `a + r·KC + 2p` (broadcast, folded into `vpdpwssd`'s memory operand), B's pair p the
    /// NV zmm at `b + p·NV·32`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn micro<const NV: usize>(np: usize, a: *const i16, b: *const i16, c: &CTile<NV>) {
        let mut acc = [[_mm512_setzero_si512(); NV]; MR];
        // SAFETY: the caller packed MR rows of ≥ 2np i16 at stride KC from `a` and np·NV·32
        // i16 from `b`; the stores are limited to c.rows rows and the masked columns.
        unsafe {
            for p in 0..np {
                let bv: [__m512i; NV] =
                    std::array::from_fn(|v| _mm512_loadu_si512(b.add((p * NV + v) * 32).cast()));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_epi32(a.add(r * KC + 2 * p).cast::<i32>().read_unaligned());
                    for v in 0..NV {
                        acc[v] = _mm512_dpwssd_epi32(acc[v], x, bv[v]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(c.rows) {
                for v in 0..NV {
                    let p = c.ptr.add(r * c.ld + v * LANES);
                    let mut x = acc[v];
                    if c.accumulate {
                        x = _mm512_add_epi32(x, _mm512_maskz_loadu_epi32(c.masks[v], p));
                    }
                    _mm512_mask_storeu_epi32(p, c.masks[v], x);
                }
            }
        }
    }

    /// Rows per AVX2 micro-tile: 6 × 16 columns = 12 ymm accumulators, 2 for B, 1 broadcast
    /// of the 16 registers.
    const MR_AVX2: usize = 6;

    /// As [`gemm_vnni_impl`] with AVX2: the same k-blocks and packing, each vector group of
    /// 16 columns (two ymm) in turn down the row tiles of 6.
    #[target_feature(enable = "avx2")]
    unsafe fn gemm_avx2_impl(
        rows: Rows,
        d: usize,
        rb: usize,
        cols: &PackedCols,
        out: &mut [i32],
        scratch: &mut [i16],
    ) {
        let (l, kp) = (cols.l, d.div_ceil(2));
        let rb_pad = rb.next_multiple_of(MR_AVX2);
        let (a, b, c) = (scratch.as_mut_ptr(), cols.data.as_ptr(), out.as_mut_ptr());
        // Blocks of equal size: d = 777 makes two of 389 pairs, not 384 and 5.
        let bp = kp.div_ceil(kp.div_ceil(KC / 2));
        for kb in (0..kp).step_by(bp) {
            let np = (kp - kb).min(bp);
            let (k0, kw) = (2 * kb, (d - 2 * kb).min(2 * np));
            for i in 0..rb_pad {
                // SAFETY: as in `gemm_vnni_impl`.
                let dst = unsafe { a.add(i * KC) };
                unsafe { panel_row(rows, widen_avx2, (i, rb, d), (k0, kw), dst, 2 * np) };
            }
            for (t, nv) in tiles(l) {
                for v in 0..nv {
                    let j0 = (t * TILE_VECS + v) * LANES;
                    // SAFETY: as in `gemm_vnni_impl`; group v's pairs are 32 i16 at stride
                    // nv·32 from the tile's pair kb.
                    let bt = unsafe {
                        b.add(t * kp * TILE_VECS * LANES * 2 + (kb * nv + v) * 2 * LANES)
                    };
                    for i0 in (0..rb_pad).step_by(MR_AVX2) {
                        let tile = CTileAvx2 {
                            // SAFETY: i0 < rb and j0 < L: inside out[..rb·L].
                            ptr: unsafe { c.add(i0 * l + j0) },
                            ld: l,
                            rows: (rb - i0).min(MR_AVX2),
                            cols: (l - j0).min(LANES),
                            accumulate: kb > 0,
                        };
                        // SAFETY: rows i0..i0 + 6 of the scratch are packed; the tile's rows
                        // and columns lie in out[..rb·L].
                        unsafe { micro_avx2(np, a.add(i0 * KC), bt, nv * 2 * LANES, &tile) };
                    }
                }
            }
        }
    }

    /// Output of one AVX2 micro-tile: `rows` × `cols` (≤ 6 × 16) at stride `ld` from `ptr`.
    struct CTileAvx2 {
        ptr: *mut i32,
        ld: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
    }

    /// `dst[..n_pad] = widen(src[..n])`, zeros after `n`: 16 values per `vpmovsxbw`.
    #[target_feature(enable = "avx2")]
    unsafe fn widen_avx2(src: *const i8, n: usize, dst: *mut i16, n_pad: usize) {
        let mut j = 0;
        // SAFETY: vector loads read src[j..j + 16] with j + 16 ≤ n, stores write
        // dst[j..j + 16] with j + 16 ≤ n ≤ n_pad; then single values below n and n_pad.
        unsafe {
            while j + 16 <= n {
                let x = _mm256_cvtepi8_epi16(_mm_loadu_si128(src.add(j).cast()));
                _mm256_storeu_si256(dst.add(j).cast(), x);
                j += 16;
            }
            for k in j..n_pad {
                *dst.add(k) = if k < n { i16::from(*src.add(k)) } else { 0 };
            }
        }
    }

    /// The 6 × 16 AVX2 micro-kernel over `np` k-pairs: row r's pair p is the i32 at
    /// `a + r·KC + 2p` (broadcast), B's pair p the two ymm at `b + p·stride`; `vpmaddwd`
    /// then `vpaddd`. Edge tiles go through a buffer.
    #[target_feature(enable = "avx2")]
    unsafe fn micro_avx2(np: usize, a: *const i16, b: *const i16, stride: usize, c: &CTileAvx2) {
        let mut acc = [[_mm256_setzero_si256(); 2]; MR_AVX2];
        // SAFETY: the caller packed 6 rows of ≥ 2np i16 at stride KC from `a` and np pairs
        // of 32 i16 at `stride` from `b`; the writes are limited to c.rows × c.cols.
        unsafe {
            for p in 0..np {
                let b0 = _mm256_loadu_si256(b.add(p * stride).cast());
                let b1 = _mm256_loadu_si256(b.add(p * stride + 16).cast());
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_epi32(a.add(r * KC + 2 * p).cast::<i32>().read_unaligned());
                    acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(x, b0));
                    acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(x, b1));
                }
            }
            if c.cols == LANES {
                for (r, acc) in acc.iter().enumerate().take(c.rows) {
                    for (h, &x) in acc.iter().enumerate() {
                        let p = c.ptr.add(r * c.ld + 8 * h);
                        let x = if c.accumulate {
                            _mm256_add_epi32(x, _mm256_loadu_si256(p.cast()))
                        } else {
                            x
                        };
                        _mm256_storeu_si256(p.cast(), x);
                    }
                }
            } else {
                let mut buf = [0i32; LANES];
                for (r, acc) in acc.iter().enumerate().take(c.rows) {
                    _mm256_storeu_si256(buf.as_mut_ptr().cast(), acc[0]);
                    _mm256_storeu_si256(buf.as_mut_ptr().add(8).cast(), acc[1]);
                    for (j, &x) in buf.iter().enumerate().take(c.cols) {
                        let p = c.ptr.add(r * c.ld + j);
                        *p = if c.accumulate { x.wrapping_add(*p) } else { x };
                    }
                }
            }
        }
    }

    /// One of the few-column kernels, `N` columns (index `N − 1`): 1..=8 for AVX-512 VNNI,
    /// 1..=4 for AVX2.
    type DotKernel = unsafe fn(*const i8, usize, usize, IntCols, *mut i32, usize);

    /// The columns' pointers for the dot kernels, the first repeated past the kernel's N.
    type IntCols = [*const i16; 8];

    /// [`super::dot_rows_i8_i16`] with AVX-512 VNNI; `false` without it.
    pub fn dot_rows_vnni(rows: &[i8], d: usize, cols: &[&[i16]], out: &mut [i32]) -> bool {
        dot_rows_vnni_with(rows, d, cols, out, super::pairs_for_few_columns())
    }

    /// [`dot_rows_vnni`], one or two columns' rows in pairs when `pairs` (the tests run
    /// both).
    pub fn dot_rows_vnni_with(
        rows: &[i8],
        d: usize,
        cols: &[&[i16]],
        out: &mut [i32],
        pairs: bool,
    ) -> bool {
        let kernels: [DotKernel; 8] = [
            dot_vnni::<1, false>,
            dot_vnni::<2, false>,
            dot_vnni::<3, true>,
            dot_vnni::<4, true>,
            dot_vnni::<5, true>,
            dot_vnni::<6, true>,
            dot_vnni::<7, true>,
            dot_vnni::<8, true>,
        ];
        let in_pairs: [DotKernel; 2] = [dot_vnni::<1, true>, dot_vnni::<2, true>];
        vnni()
            && match (pairs, cols.len()) {
                (true, 1 | 2) => dot_rows_with(in_pairs, rows, d, cols, out),
                _ => dot_rows_with(kernels, rows, d, cols, out),
            }
    }

    /// [`super::dot_rows_i8_i16`] with AVX2; `false` without it.
    pub fn dot_rows_avx2(rows: &[i8], d: usize, cols: &[&[i16]], out: &mut [i32]) -> bool {
        let kernels: [DotKernel; 4] = [dot_avx2::<1>, dot_avx2::<2>, dot_avx2::<3>, dot_avx2::<4>];
        avx2() && dot_rows_with(kernels, rows, d, cols, out)
    }

    /// [`super::dot_score_rows`] with AVX-512 VNNI; `false` without it.
    pub fn dot_score_vnni(
        rows: &[i8],
        row_scales: &[f32],
        d: usize,
        col: (&[i16], f64),
        terms: &TokenTerms,
        out: &mut [f64],
    ) -> bool {
        let rb = out.len();
        assert!(
            rows.len() == rb * d && row_scales.len() >= rb && col.0.len() == d,
            "dot_score_rows: shapes differ"
        );
        terms.check(rb, "dot_score_rows");
        assert!(terms.columns == 1, "dot_score_rows: one test column");
        if !vnni() || d == 0 {
            return false;
        }
        // SAFETY: the features were just checked; the asserts above cover every access.
        unsafe { dot_score_impl(rows, row_scales, d, col, terms, out) };
        true
    }

    /// Per row: the integer dot ([`rows_dots`], as [`dot_vnni`]) and its scaling; the O(C)
    /// scores 8 rows at a time ([`token_raws_by`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn dot_score_impl(
        rows: &[i8],
        row_scales: &[f32],
        d: usize,
        (col, scale): (&[i16], f64),
        terms: &TokenTerms,
        out: &mut [f64],
    ) {
        let cp = col.as_ptr();
        // SAFETY: row i < rb spans rows[i·d .. (i + 1)·d] and the column d values; the terms
        // cover the rb tokens (all checked by the caller).
        unsafe {
            token_raws_by(terms, out, |i| {
                super::prefetch_ahead(rows.as_ptr().add(i * d).cast(), d);
                let [[dot]] = rows_dots::<1, 1, 2>(rows.as_ptr().add(i * d), d, [cp; 8], false);
                let s_k = f64::from(*row_scales.get_unchecked(i));
                [f64::from((f64::from(dot) * (s_k * scale)) as f32)]
            });
        }
    }

    /// `out[i] = Σ_j r_i[j]·(Σ_l x_il·coefs[l,j] + t_i[j])` for the tokens of `terms` and
    /// their `M` test columns, with `x_i = x_of(i)` asked once per token, in order: 8 tokens
    /// at a time with one reduction for all 8 ([`raws8`], 2× faster than a reduction per
    /// token) when C ≤ 16, else token by token ([`token_raw`]); shared with
    /// `kernels::token_raws`.
    ///
    /// # Safety
    /// AVX-512 F is present; `terms` cover `out.len()` tokens ([`TokenTerms::check`]) and
    /// have `M` columns.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn token_raws_by<const M: usize>(
        terms: &TokenTerms,
        out: &mut [f64],
        x_of: impl FnMut(usize) -> [f64; M],
    ) {
        // SAFETY: passed on from the caller.
        unsafe {
            match terms.labels().div_ceil(8) {
                0 | 1 => raws_grouped::<1, M>(terms, out, x_of),
                2 => raws_grouped::<2, M>(terms, out, x_of),
                _ => raws_grouped::<0, M>(terms, out, x_of),
            }
        }
    }

    /// [`token_raws_by`] with the labels in `CH` registers of 8 (`CH = 0`: token by token).
    /// With [`SkipBelow`], groups of 8 whose bounds are all below the cut get zeros, and the
    /// tokens of other groups that need scoring wait in a [`Pending`] group of 8.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn raws_grouped<const CH: usize, const M: usize>(
        terms: &TokenTerms,
        out: &mut [f64],
        mut x_of: impl FnMut(usize) -> [f64; M],
    ) {
        let c = terms.labels();
        let regs = LabelRegs::<CH, M>::new(terms.coefs, c);
        // SAFETY (every pointer below): r's row i and the class's table row hold c values
        // for i < out.len() (by the caller).
        let rows = |i: usize| unsafe {
            (
                terms.r.as_ptr().add(i * c),
                terms
                    .table
                    .as_ptr()
                    .add(*terms.classes.get_unchecked(i) as usize * c),
            )
        };
        let skip = terms.skip.filter(|skip| skip.below > 0.0);
        let mut pending = Pending::<M>::new();
        let mut i = 0;
        if CH > 0 {
            while i + 8 <= out.len() {
                // A loop: through `array::from_fn` the dots' closure stayed out of line.
                let mut xs = [[0.0; M]; 8];
                for (l, x) in xs.iter_mut().enumerate() {
                    *x = x_of(i + l);
                }
                let at = out.as_mut_ptr().wrapping_add(i);
                // SAFETY: the norms of tokens i..i + 8 (checked by the caller).
                let needed = skip.map_or(0xff, |skip| unsafe { needs_scores(&skip, i, &xs) });
                if skip.is_none() {
                    ask_for_r_rows(terms.r, (i + R_AHEAD) * c, 8 * c);
                }
                if needed == 0xff {
                    let (r, t) = (|l| rows(i + l).0, |l| rows(i + l).1);
                    // SAFETY: out[i..i + 8] lies in out; the rows as above.
                    let raws = unsafe {
                        raws8(&regs, &xs, std::array::from_fn(r), std::array::from_fn(t))
                    };
                    unsafe { _mm512_storeu_pd(at, raws) };
                } else {
                    // SAFETY: as above.
                    unsafe { _mm512_storeu_pd(at, _mm512_setzero_pd()) };
                    for l in (0..8).filter(|l| needed >> l & 1 == 1) {
                        if pending.push(i + l, xs[l], rows(i + l).0, c) {
                            // SAFETY: the pending tokens are below i + 8, as above.
                            unsafe { pending.score(&regs, &rows, out) };
                        }
                    }
                }
                i += 8;
            }
        }
        while pending.len >= 8 {
            // SAFETY: as above.
            unsafe { pending.score(&regs, &rows, out) };
        }
        for (k, x) in pending.tokens() {
            let (r, t) = rows(k);
            // SAFETY: as above.
            out[k] = unsafe { token_raw(x, r, t, terms.coefs) };
        }
        for (k, o) in out.iter_mut().enumerate().skip(i) {
            let (r, t) = rows(k);
            // SAFETY: as above.
            *o = unsafe { token_raw(x_of(k), r, t, terms.coefs) };
        }
    }

    /// Lane l set: token `i + l`'s bound reaches `skip.below` (or is not a number).
    ///
    /// # Safety
    /// AVX-512 F is present; `skip.norms` and `skip.table_norms` hold tokens `i..i + 8`,
    /// `skip.coef_norms` M values and `skip.coef_gram` M·M.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn needs_scores<const M: usize>(
        skip: &SkipBelow,
        i: usize,
        xs: &[[f64; M]; 8],
    ) -> __mmask8 {
        // SAFETY: by the caller.
        let norms = unsafe { _mm512_cvtps_pd(_mm256_loadu_ps(skip.norms.as_ptr().add(i))) };
        let x: [__m512d; M] = std::array::from_fn(|l| {
            let lane: [f64; 8] = std::array::from_fn(|t| xs[t][l]);
            // SAFETY: 8 values.
            unsafe { _mm512_loadu_pd(lane.as_ptr()) }
        });
        // S = Σ_l |x_l|·‖c_l‖, then for several columns min(S, √(xᵀGx + 10⁻¹²·S²)).
        let mut sum = _mm512_setzero_pd();
        for l in 0..M {
            // SAFETY: coef_norms has M values (by the caller).
            let n = unsafe { *skip.coef_norms.get_unchecked(l) };
            sum = _mm512_fmadd_pd(_mm512_abs_pd(x[l]), _mm512_set1_pd(n), sum);
        }
        let mut inner = sum;
        if M > 1 {
            // xᵀGx = Σ_l x_l·(G_ll·x_l + Σ_(m>l) 2·G_lm·x_m) (G is symmetric): M short
            // chains that run side by side. As one chain of M² FMAs, bound by their latency,
            // the test took 14.7 ns a token at M = 8 (scoring every token: 4.5); now 6.7, and
            // at M = 5 3.3 instead of 8.3 (`row_kernels`, hot, session 18).
            // Any order's rounding is a few units of 2⁻⁵³·S², within the room below.
            // SAFETY: coef_gram has M·M values (by the caller).
            let g = |l: usize, m: usize| unsafe { *skip.coef_gram.get_unchecked(l * M + m) };
            // 2·x_m rather than 2·G_lm: G's values then broadcast straight from memory.
            let mut twice = [_mm512_setzero_pd(); M];
            for m in 0..M {
                twice[m] = _mm512_add_pd(x[m], x[m]);
            }
            let mut parts = [_mm512_setzero_pd(); M];
            for l in 0..M {
                let mut y = _mm512_mul_pd(x[l], _mm512_set1_pd(g(l, l)));
                for m in l + 1..M {
                    y = _mm512_fmadd_pd(twice[m], _mm512_set1_pd(g(l, m)), y);
                }
                parts[l] = _mm512_mul_pd(x[l], y);
            }
            // Summed as a tree (the parts' chain was on the path to the comparison).
            let mut width = M;
            while width > 1 {
                let half = width / 2;
                for p in 0..half {
                    parts[p] = _mm512_add_pd(parts[p], parts[p + width - half]);
                }
                width -= half;
            }
            let room = _mm512_mul_pd(_mm512_mul_pd(sum, sum), _mm512_set1_pd(1e-12));
            let quad = _mm512_add_pd(parts[0], room);
            // A NaN stays NaN (max and min return their second operand then): scored.
            let exact = _mm512_sqrt_pd(_mm512_max_pd(_mm512_setzero_pd(), quad));
            inner = _mm512_min_pd(sum, exact);
        }
        // SAFETY: by the caller.
        let table = unsafe { _mm512_cvtps_pd(_mm256_loadu_ps(skip.table_norms.as_ptr().add(i))) };
        let inner = _mm512_add_pd(inner, table);
        let bound = _mm512_mul_pd(norms, inner);
        _mm512_cmp_pd_mask::<_CMP_NLT_UQ>(bound, _mm512_set1_pd(skip.below))
    }

    /// Tokens that need scoring, with their dots, waiting in a ring of [`Pending::CAP`]: each
    /// token's `r` row is asked for (into L1) when it joins ([`Pending::push`]) and scored,
    /// with the 7 that joined after it, once the ring is full: ~24 needed tokens (a hundred or
    /// more tested ones) later, by when the row has come. Scored in groups of 8 as they
    /// joined, the rows of the few tokens a skip lets through were misses, a group at a time:
    /// the block scoring of a 3-token query with 17 % of its tokens scored took 13.6–16.9 ns
    /// a token with its `r` rows in memory (more than scoring every token, 12.9) against 4.1
    /// hot; the ring 11.7–13.9 (`benches/row_kernels.rs`, session 11).
    struct Pending<const M: usize> {
        tokens: [usize; PENDING],
        xs: [[f64; M]; PENDING],
        /// The oldest token's slot (a multiple of 8) and the count.
        head: usize,
        len: usize,
    }

    /// [`Pending::CAP`].
    const PENDING: usize = 32;

    /// How many tokens ahead [`raws_grouped`] asks for the `r` rows when it scores every
    /// token: the hardware prefetchers alone left the rows (72 bytes a token at C = 9) to
    /// arrive as misses. Block scoring at 8 columns with the rows in memory took 14.0 → 10.4
    /// ns a token (hot: 7.6–8.0 either way), at 5 columns 12.3–12.6 → 9.1–9.5; 128 and 256
    /// tokens ahead were no better (`benches/row_kernels.rs`, session 16). int8 queries of
    /// 5 / 8 tokens went from 83–88 % of the read ceiling to 86–94 % (four alternating
    /// rounds).
    const R_AHEAD: usize = 64;

    /// Asks for `r[from..from + len]` into L1, a prefetch per line (one past the buffer reads
    /// nothing and cannot fault).
    #[inline]
    fn ask_for_r_rows(r: &[f64], from: usize, len: usize) {
        let start = r.as_ptr().wrapping_add(from).cast::<u8>();
        for offset in (0..len * 8).step_by(64) {
            prefetch_l1(start.wrapping_add(offset));
        }
    }

    impl<const M: usize> Pending<M> {
        const CAP: usize = PENDING;

        fn new() -> Self {
            Pending {
                tokens: [0; PENDING],
                xs: [[0.0; M]; PENDING],
                head: 0,
                len: 0,
            }
        }

        /// Adds a token, asking for its `r` row (`r`, C values); `true` when the ring is then
        /// full.
        #[inline]
        fn push(&mut self, token: usize, x: [f64; M], r: *const f64, c: usize) -> bool {
            prefetch_l1(r.cast());
            prefetch_l1(r.wrapping_add(c.saturating_sub(1)).cast());
            let at = (self.head + self.len) % Self::CAP;
            self.tokens[at] = token;
            self.xs[at] = x;
            self.len += 1;
            self.len == Self::CAP
        }

        /// The waiting tokens with their dots, oldest first.
        fn tokens(&self) -> impl Iterator<Item = (usize, [f64; M])> + '_ {
            (0..self.len).map(|i| {
                let at = (self.head + i) % Self::CAP;
                (self.tokens[at], self.xs[at])
            })
        }

        /// Scores the 8 oldest tokens into `out` and drops them (at least 8 wait).
        ///
        /// # Safety
        /// AVX-512 F is present; `rows(k)` are valid pointers to C values and `k < out.len()`
        /// for every waiting token `k`.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn score<const CH: usize>(
            &mut self,
            regs: &LabelRegs<CH, M>,
            rows: &impl Fn(usize) -> (*const f64, *const f64),
            out: &mut [f64],
        ) {
            let h = self.head;
            let group: [usize; 8] = std::array::from_fn(|l| self.tokens[h + l]);
            let (r, t) = (|l| rows(group[l]).0, |l| rows(group[l]).1);
            let xs: [[f64; M]; 8] = std::array::from_fn(|l| self.xs[h + l]);
            // SAFETY: by the caller.
            let raws = unsafe { raws8(regs, &xs, std::array::from_fn(r), std::array::from_fn(t)) };
            let mut lanes = [0.0; 8];
            // SAFETY: 8 values into 8.
            unsafe { _mm512_storeu_pd(lanes.as_mut_ptr(), raws) };
            for (&k, raw) in group.iter().zip(lanes) {
                out[k] = raw;
            }
            self.head = (h + 8) % Self::CAP;
            self.len -= 8;
        }
    }

    /// The coefficients of [`raws8`], each column's in `CH` registers of 8 labels, with each
    /// register's lane mask (the last one partial).
    struct LabelRegs<const CH: usize, const M: usize> {
        masks: [__mmask8; CH],
        coefs: [[__m512d; CH]; M],
        /// When the last register would hold one label (C = 9, a BIO tag set of four types)
        /// and M ≥ 5: that label's coefficients across the M columns (lane l: column l's), and
        /// its index.
        last_alone: Option<(__m512d, usize)>,
    }

    impl<const CH: usize, const M: usize> LabelRegs<CH, M> {
        /// From the M × C coefficients, C ≤ 8·CH.
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn new(coefs: &[f64], c: usize) -> Self {
            // From 5 columns on (where it saves the most): block scoring at 8 columns
            // 5.8–6.1 → 3.8–4.3 ns a token hot; at 3 columns the skip test's gathered groups
            // measured slower with it (3.5 → 3.8–3.9 at 30 % scored; `benches/row_kernels.rs`).
            let alone = CH >= 2 && c == 8 * (CH - 1) + 1 && M >= 5;
            let last_alone = alone.then(|| {
                let lanes: [f64; 8] = std::array::from_fn(|l| match l < M {
                    true => coefs[l * c + c - 1],
                    false => 0.0,
                });
                // SAFETY: 8 values.
                (unsafe { _mm512_loadu_pd(lanes.as_ptr()) }, c - 1)
            });
            let masks =
                std::array::from_fn(|j| ((1u32 << c.saturating_sub(8 * j).min(8)) - 1) as __mmask8);
            // SAFETY: lanes [8j, min(8j + 8, c)) of column l's c coefficients only (the mask).
            let coefs = std::array::from_fn(|l| {
                std::array::from_fn(|j| unsafe {
                    _mm512_maskz_loadu_pd(masks[j], coefs.as_ptr().wrapping_add(l * c + 8 * j))
                })
            });
            LabelRegs {
                masks,
                coefs,
                last_alone,
            }
        }
    }

    /// The raw scores of 8 tokens (lane l: token l, its dots `xs[l]`, its `r` row `r[l]` and
    /// table row `t[l]`), as 8 [`token_raw`]s whose horizontal sums are reduced together
    /// ([`hsum8`]).
    ///
    /// # Safety
    /// AVX-512 F is present; each `r[l]` and `t[l]` points to C values, C as in `regs`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn raws8<const CH: usize, const M: usize>(
        regs: &LabelRegs<CH, M>,
        xs: &[[f64; M]; 8],
        r: [*const f64; 8],
        t: [*const f64; 8],
    ) -> __m512d {
        // A loop rather than `array::from_fn`: LLVM left that closure out of line, a call per
        // token with its sums returned through memory.
        let mut acc = [_mm512_setzero_pd(); 8];
        // A last register of one label would cost M FMAs on one lane: that label's term
        // `r·(t + Σ_l x_l·c_l)` goes in as `Σ_l x_l·(r·c_l)` across the columns' lanes plus
        // `r·t` in lane 0 (the horizontal sum adds every lane).
        let full = CH - usize::from(regs.last_alone.is_some());
        let x_lanes = ((1u32 << M.min(8)) - 1) as __mmask8;
        for (l, acc) in acc.iter_mut().enumerate() {
            for j in 0..full {
                // SAFETY: lanes [8j, min(8j + 8, C)) of token l's rows (by the caller).
                let (rv, mut u) = unsafe {
                    (
                        _mm512_maskz_loadu_pd(regs.masks[j], r[l].add(8 * j)),
                        _mm512_maskz_loadu_pd(regs.masks[j], t[l].add(8 * j)),
                    )
                };
                for (x, coefs) in xs[l].iter().zip(&regs.coefs) {
                    u = _mm512_fmadd_pd(_mm512_set1_pd(*x), coefs[j], u);
                }
                *acc = _mm512_fmadd_pd(rv, u, *acc);
            }
            if let Some((coefs, j)) = regs.last_alone {
                // SAFETY: label j < C of token l's rows; M ≤ 8 dots (the mask).
                let (rj, tj, x) = unsafe {
                    (
                        *r[l].add(j),
                        *t[l].add(j),
                        _mm512_maskz_loadu_pd(x_lanes, xs[l].as_ptr()),
                    )
                };
                let scaled = _mm512_mul_pd(_mm512_set1_pd(rj), coefs);
                *acc = _mm512_fmadd_pd(x, scaled, *acc);
                *acc = _mm512_mask_add_pd(*acc, 1, *acc, _mm512_set1_pd(rj * tj));
            }
        }
        hsum8(acc)
    }

    /// Lane l of the result: the sum of the lanes of `v[l]` (three levels of pairwise sums
    /// across the 8 registers at once instead of 8 reductions).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn hsum8(v: [__m512d; 8]) -> __m512d {
        // Two registers' lanes summed in pairs: 128-bit chunk k holds (a's pair k, b's pair k).
        let pairs = |a, b| _mm512_add_pd(_mm512_unpacklo_pd(a, b), _mm512_unpackhi_pd(a, b));
        // Two such registers' chunks summed in pairs: chunks (x 0+1, x 2+3, y 0+1, y 2+3).
        let chunks = |x, y| {
            _mm512_add_pd(
                _mm512_shuffle_f64x2::<0b10_00_10_00>(x, y),
                _mm512_shuffle_f64x2::<0b11_01_11_01>(x, y),
            )
        };
        let low = chunks(pairs(v[0], v[1]), pairs(v[2], v[3]));
        let high = chunks(pairs(v[4], v[5]), pairs(v[6], v[7]));
        chunks(low, high)
    }

    /// One token's raw score `Σ_j r[j]·(Σ_l x_l·coefs[l,j] + t[j])` for its M dots, the labels
    /// in registers of 8 (masked tail).
    ///
    /// # Safety
    /// AVX-512 F is present; `r` and `t` are valid for C reads, C = `coefs.len() / M`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn token_raw<const M: usize>(
        x: [f64; M],
        r: *const f64,
        t: *const f64,
        coefs: &[f64],
    ) -> f64 {
        let c = coefs.len() / M;
        let mut acc = _mm512_setzero_pd();
        for j in (0..c).step_by(8) {
            let m = ((1u32 << (c - j).min(8)) - 1) as __mmask8;
            // SAFETY: lanes [j, min(j + 8, c)) of c values each (by the caller); masked-off
            // lanes are not accessed.
            let (rv, mut u) = unsafe {
                (
                    _mm512_maskz_loadu_pd(m, r.add(j)),
                    _mm512_maskz_loadu_pd(m, t.add(j)),
                )
            };
            for (l, &x) in x.iter().enumerate() {
                // SAFETY: column l's lanes [j, min(j + 8, c)).
                let cv = unsafe { _mm512_maskz_loadu_pd(m, coefs.as_ptr().add(l * c + j)) };
                u = _mm512_fmadd_pd(_mm512_set1_pd(x), cv, u);
            }
            acc = _mm512_fmadd_pd(rv, u, acc);
        }
        _mm512_reduce_add_pd(acc)
    }

    /// Runs the columns K at a time through `kernels`, whose CPU features the caller checked.
    fn dot_rows_with<const K: usize>(
        kernels: [DotKernel; K],
        rows: &[i8],
        d: usize,
        cols: &[&[i16]],
        out: &mut [i32],
    ) -> bool {
        let rb = dot_shape(rows, d, cols, out);
        let l = cols.len();
        for (g, cg) in cols.chunks(K).enumerate() {
            let ptrs: IntCols = std::array::from_fn(|i| cg[i.min(cg.len() - 1)].as_ptr());
            // SAFETY: the kernels' features were checked by the callers; `dot_shape` checked
            // rows (rb × d), each column (d) and out (rb × L), and columns K·g + i < L are
            // written only.
            unsafe {
                let (r, o) = (rows.as_ptr(), out.as_mut_ptr().add(K * g));
                kernels[cg.len() - 1](r, rb, d, ptrs, o, l);
            }
        }
        true
    }

    /// `out[i·ld + n] = row_i · cols[n]` for n < N. One or two columns (unless `PAIRS`, see
    /// [`super::pairs_for_few_columns`]): one row at a time, its lines asked for
    /// [`PREFETCH_AHEAD`](super::PREFETCH_AHEAD) bytes on in a burst per row. Three or four: two rows side by side sharing each column load ([`rows_dots`], the
    /// odd last row alone), each line of both asked for as the loop reaches it — one core
    /// read 3 columns at 75–77 % of a plain read of the rows one at a time, at 91–103 % in
    /// pairs (hot in L2: 33 → 26 ns a row), and a one-core 3-token query went from 47–52 to
    /// 57 % of its read; with 2 columns the pairs measured 5 points slower on both cores
    /// (BENCHMARKS.md, session 10). Five to eight: pairs in two passes, 4 columns then the
    /// rest with the rows from L1. In one pass (one accumulator per row and column) 8
    /// columns spilled the 16 accumulators (hot 104 ns a row; one row at a time 83), and
    /// 5–7 took 42 / 49 / 57 ns a row against 40 / 47 / 52 in two passes, 8 60–63
    /// (session 11).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn dot_vnni<const N: usize, const PAIRS: bool>(
        rows: *const i8,
        rb: usize,
        d: usize,
        cols: IntCols,
        out: *mut i32,
        ld: usize,
    ) {
        // SAFETY: rows i, i + 1 < rb span rows[i·d .. (i + 2)·d]; out[i·ld + n] lies in out
        // (both by the caller).
        unsafe {
            let mut i = 0;
            while PAIRS && (1..=8).contains(&N) && i + 2 <= rb {
                let p = rows.add(i * d);
                let mut dots = [[0; 8]; 2];
                if N >= 5 {
                    // Two passes: 4 columns, then the rest with the rows from L1.
                    let high: IntCols = std::array::from_fn(|n| cols[(n + 4).min(7)]);
                    let low = rows_dots::<2, 4, 2>(p, d, cols, true);
                    macro_rules! rest {
                        ($k:literal) => {{
                            let high = rows_dots::<2, $k, 2>(p, d, high, false);
                            for h in 0..2 {
                                dots[h][4..4 + $k].copy_from_slice(&high[h]);
                            }
                        }};
                    }
                    match N {
                        5 => rest!(1),
                        6 => rest!(2),
                        7 => rest!(3),
                        _ => rest!(4),
                    }
                    for h in 0..2 {
                        dots[h][..4].copy_from_slice(&low[h]);
                    }
                } else {
                    let two = rows_dots::<2, N, 2>(p, d, cols, true);
                    for h in 0..2 {
                        dots[h][..N].copy_from_slice(&two[h]);
                    }
                }
                for (h, dots) in dots.iter().enumerate() {
                    for (n, &dot) in dots[..N].iter().enumerate() {
                        *out.add((i + h) * ld + n) = dot;
                    }
                }
                i += 2;
            }
            while i < rb {
                let p = rows.add(i * d);
                if !PAIRS {
                    super::prefetch_ahead(p.cast(), d);
                }
                let [dots] = rows_dots::<1, N, 2>(p, d, cols, PAIRS);
                for (n, &dot) in dots.iter().enumerate() {
                    *out.add(i * ld + n) = dot;
                }
                i += 1;
            }
        }
    }

    /// The dots of `R` consecutive rows from `r` with the first `N` columns: 64 bytes of each
    /// row per step into `U` accumulators per row and column (each column vector loaded once for
    /// the `R` rows), then one horizontal sum per row and column (the body of [`dot_vnni`] and
    /// of the fused [`dot_score_impl`]). `ahead`: ask for each 64 bytes of the rows
    /// [`PREFETCH_AHEAD`](super::PREFETCH_AHEAD) bytes on as the loop reaches them.
    ///
    /// # Safety
    /// The CPU has the features; `r` is valid for `R·d` reads and each column for `d`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn rows_dots<const R: usize, const N: usize, const U: usize>(
        r: *const i8,
        d: usize,
        cols: IntCols,
        ahead: bool,
    ) -> [[i32; N]; R] {
        // SAFETY: full loads cover [j, j + 32) with j + 32 ≤ d of each row, the tail's masks
        // [j, d).
        unsafe {
            let mut acc = [[[_mm512_setzero_si512(); U]; N]; R];
            let mut j = 0;
            while j + 64 <= d {
                if ahead {
                    for h in 0..R {
                        super::prefetch_line_ahead(r.add(h * d + j).cast());
                    }
                }
                for u in 0..2 {
                    let mut x = [_mm512_setzero_si512(); R];
                    for h in 0..R {
                        let p = r.add(h * d + j + 32 * u);
                        x[h] = _mm512_cvtepi8_epi16(_mm256_loadu_si256(p.cast()));
                    }
                    for n in 0..N {
                        let y = _mm512_loadu_si512(cols[n].add(j + 32 * u).cast());
                        for h in 0..R {
                            acc[h][n][u % U] = _mm512_dpwssd_epi32(acc[h][n][u % U], x[h], y);
                        }
                    }
                }
                j += 64;
            }
            while j < d {
                let m = lane_mask(d - j);
                let mut x = [_mm512_setzero_si512(); R];
                for h in 0..R {
                    let bytes = _mm512_maskz_loadu_epi8(m, r.add(h * d + j));
                    x[h] = _mm512_cvtepi8_epi16(_mm512_castsi512_si256(bytes));
                }
                for n in 0..N {
                    let y = _mm512_maskz_loadu_epi16(m as __mmask32, cols[n].add(j));
                    for h in 0..R {
                        acc[h][n][0] = _mm512_dpwssd_epi32(acc[h][n][0], x[h], y);
                    }
                }
                j += 32;
            }
            let mut dots = [[0; N]; R];
            for (dots, acc) in dots.iter_mut().zip(&acc) {
                for (dot, acc) in dots.iter_mut().zip(acc) {
                    let sum = acc[1..].iter().fold(acc[0], |s, a| _mm512_add_epi32(s, *a));
                    *dot = _mm512_reduce_add_epi32(sum);
                }
            }
            dots
        }
    }

    /// As [`dot_vnni`] with AVX2: 16 values per `vpmovsxbw`, `vpmaddwd` + `vpaddd`, one row
    /// at a time with 32 bytes per step, the last `d mod 16` in scalar code.
    #[target_feature(enable = "avx2")]
    unsafe fn dot_avx2<const N: usize>(
        rows: *const i8,
        rb: usize,
        d: usize,
        cols: IntCols,
        out: *mut i32,
        ld: usize,
    ) {
        // SAFETY: row i < rb spans rows[i·d .. (i + 1)·d]; each column spans d i16; loads
        // cover [j, j + 16) with j + 16 ≤ d, then single values below d.
        unsafe {
            for i in 0..rb {
                let r = rows.add(i * d);
                super::prefetch_ahead(r.cast(), d);
                let mut acc = [[_mm256_setzero_si256(); 2]; N];
                let mut j = 0;
                while j + 32 <= d {
                    for u in 0..2 {
                        let x = _mm256_cvtepi8_epi16(_mm_loadu_si128(r.add(j + 16 * u).cast()));
                        for n in 0..N {
                            let y = _mm256_loadu_si256(cols[n].add(j + 16 * u).cast());
                            acc[n][u] = _mm256_add_epi32(acc[n][u], _mm256_madd_epi16(x, y));
                        }
                    }
                    j += 32;
                }
                if j + 16 <= d {
                    let x = _mm256_cvtepi8_epi16(_mm_loadu_si128(r.add(j).cast()));
                    for n in 0..N {
                        let y = _mm256_loadu_si256(cols[n].add(j).cast());
                        acc[n][0] = _mm256_add_epi32(acc[n][0], _mm256_madd_epi16(x, y));
                    }
                    j += 16;
                }
                for n in 0..N {
                    let s = _mm256_add_epi32(acc[n][0], acc[n][1]);
                    let s =
                        _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
                    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
                    let mut sum = _mm_cvtsi128_si32(s);
                    for k in j..d {
                        let prod = i32::from(*r.add(k)) * i32::from(*cols[n].add(k));
                        sum = sum.wrapping_add(prod);
                    }
                    *out.add(i * ld + n) = sum;
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 64-bit LCG (also the AMX kernels' tests').
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        /// Uniform in [-m, m].
        pub(crate) fn within(&mut self, m: i64) -> i64 {
            (self.next() % (2 * m as u64 + 1)) as i64 - m
        }

        fn sign(&mut self) -> i64 {
            if self.next() & 1 == 0 {
                1
            } else {
                -1
            }
        }
    }

    const DIMS: [usize; 9] = [1, 7, 31, 32, 33, 64, 100, 768, 777];
    const COLS: [usize; 14] = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 47, 48, 49, 300];
    const ROWS: [usize; 6] = [0, 1, 7, 8, 9, 100];
    /// Written past `rb × L` in `out`: must survive every call.
    const SENTINEL: i32 = 0x5eed_5eed;

    /// The exact sums in i64, `rb × L` row-major.
    fn reference(rows: &[i8], cols: &[i16], rb: usize, l: usize, d: usize) -> Vec<i64> {
        let mut out = vec![0i64; rb * l];
        for i in 0..rb {
            for j in 0..l {
                out[i * l + j] = (0..d)
                    .map(|k| i64::from(rows[i * d + k]) * i64::from(cols[j * d + k]))
                    .sum();
            }
        }
        out
    }

    /// Runs every path on the CPU has on `rows` × `cols` and compares with `want` (each as
    /// i32, wrapped modulo 2^32 when `wrap`, else required to fit).
    fn check_all(rows: &[i8], cols: &[i16], rb: usize, l: usize, d: usize, wrap: bool, what: &str) {
        let want: Vec<i32> = reference(rows, cols, rb, l, d)
            .iter()
            .map(|&x| {
                if wrap {
                    x as i32
                } else {
                    i32::try_from(x).expect("test sums fit")
                }
            })
            .collect();
        let packed = PackedCols::new(cols, l, d);
        assert_eq!((packed.num_cols(), packed.dim()), (l, d));
        let col_refs: Vec<&[i16]> = cols.chunks_exact(d).collect();
        let mut scratch = Vec::new();
        let fresh = || vec![SENTINEL; rb * l + 5];
        let check = |got: &[i32], path: &str| {
            assert_eq!(
                &got[..rb * l],
                &want[..],
                "{path} {what} d={d} L={l} rb={rb}"
            );
            assert!(
                got[rb * l..].iter().all(|&x| x == SENTINEL),
                "{path} wrote past rb × L"
            );
        };

        let mut out = fresh();
        gemm(Rows::I8(rows), d, &packed, &mut out, &mut scratch);
        check(&out, "gemm");
        let mut out = fresh();
        gemm_portable(Rows::I8(rows), d, &packed, &mut out);
        check(&out, "gemm portable");
        let mut out = fresh();
        dot_rows_i8_i16(rows, d, &col_refs, &mut out);
        check(&out, "dot_rows");
        let mut out = fresh();
        dot_rows_i8_i16_portable(rows, d, &col_refs, &mut out);
        check(&out, "dot_rows portable");
        #[cfg(target_arch = "x86_64")]
        {
            let mut out = fresh();
            if x86::gemm_vnni(Rows::I8(rows), d, &packed, &mut out, &mut scratch) {
                check(&out, "gemm vnni");
            }
            let mut out = fresh();
            if x86::gemm_avx2(Rows::I8(rows), d, &packed, &mut out, &mut scratch) {
                check(&out, "gemm avx2");
            }
            for pairs in [false, true] {
                let mut out = fresh();
                if x86::dot_rows_vnni_with(rows, d, &col_refs, &mut out, pairs) {
                    check(&out, &format!("dot_rows vnni, pairs {pairs}"));
                }
            }
            let mut out = fresh();
            if x86::dot_rows_avx2(rows, d, &col_refs, &mut out) {
                check(&out, "dot_rows avx2");
            }
        }
    }

    /// The largest U with 127·U·d < 2^31 (and |U| ≤ i16::MAX).
    fn max_u(d: usize) -> i64 {
        (i64::from(i32::MAX) / (127 * d as i64)).min(i64::from(i16::MAX))
    }

    #[test]
    fn every_path_is_exact_on_random_data() {
        let mut rng = Rng(7);
        for d in DIMS {
            // -128 allowed: 128·U·d must fit too.
            let u = (i64::from(i32::MAX) / (128 * d as i64)).min(i64::from(i16::MAX));
            for l in COLS {
                for rb in ROWS {
                    let rows: Vec<i8> = (0..rb * d).map(|_| rng.next() as u8 as i8).collect();
                    let cols: Vec<i16> = (0..l * d).map(|_| rng.within(u) as i16).collect();
                    check_all(&rows, &cols, rb, l, d, false, "random");
                }
            }
        }
    }

    #[test]
    fn every_path_is_exact_on_extreme_values() {
        let mut rng = Rng(11);
        for d in DIMS {
            let u = max_u(d);
            for l in COLS {
                for rb in ROWS {
                    // Row 0 all +127, row 1 all -127, column 0 all +U, column 1 all -U: the
                    // largest sums of either sign; the rest random signs.
                    let rows: Vec<i8> = (0..rb * d)
                        .map(|x| match x / d {
                            0 => 127,
                            1 => -127,
                            _ => (127 * rng.sign()) as i8,
                        })
                        .collect();
                    let cols: Vec<i16> = (0..l * d)
                        .map(|x| match x / d {
                            0 => u as i16,
                            1 => -u as i16,
                            _ => (u * rng.sign()) as i16,
                        })
                        .collect();
                    check_all(&rows, &cols, rb, l, d, false, "extreme");
                }
            }
        }
    }

    #[test]
    fn every_path_wraps_alike_when_sums_overflow() {
        // Full-range values (-128, i16::MIN included): the exact sum modulo 2^32 everywhere.
        let mut rng = Rng(13);
        for d in [1, 33, 777, 4099] {
            for l in [1, 4, 49] {
                let rb = 9;
                let rows: Vec<i8> = (0..rb * d)
                    .map(|x| {
                        if x % 3 == 0 {
                            -128
                        } else {
                            rng.next() as u8 as i8
                        }
                    })
                    .collect();
                let cols: Vec<i16> = (0..l * d)
                    .map(|x| {
                        if x % 5 == 0 {
                            i16::MIN
                        } else {
                            rng.next() as u16 as i16
                        }
                    })
                    .collect();
                check_all(&rows, &cols, rb, l, d, true, "wrapping");
            }
        }
    }

    #[test]
    fn gemm_paths_are_exact_on_i16_rows() {
        // Rows and columns within ±R (R·R·d < 2^31, as a ranking copy's), random and extreme.
        let mut rng = Rng(19);
        for d in DIMS {
            let r = (i64::from(i32::MAX) / d as i64)
                .isqrt()
                .min(i64::from(i16::MAX));
            for l in COLS {
                for rb in ROWS {
                    for extreme in [false, true] {
                        // Extreme: row 0 and column 0 all +R (the largest sum, R²·d), the
                        // rest ±R.
                        let mut value = |x: usize| match (extreme, x < d) {
                            (false, _) => rng.within(r),
                            (true, true) => r,
                            (true, false) => r * rng.sign(),
                        };
                        let rows: Vec<i16> = (0..rb * d).map(|x| value(x) as i16).collect();
                        let cols: Vec<i16> = (0..l * d).map(|x| value(x) as i16).collect();
                        let want: Vec<i32> = (0..rb * l)
                            .map(|x| {
                                let (i, j) = (x / l, x % l);
                                let sum: i64 = (0..d)
                                    .map(|k| {
                                        i64::from(rows[i * d + k]) * i64::from(cols[j * d + k])
                                    })
                                    .sum();
                                i32::try_from(sum).expect("sums fit")
                            })
                            .collect();
                        let packed = PackedCols::new(&cols, l, d);
                        let mut scratch = Vec::new();
                        let mut outs = vec![vec![SENTINEL; rb * l + 3]; 4];
                        gemm(Rows::I16(&rows), d, &packed, &mut outs[0], &mut scratch);
                        gemm_portable(Rows::I16(&rows), d, &packed, &mut outs[1]);
                        #[cfg(target_arch = "x86_64")]
                        {
                            let rows = Rows::I16(&rows);
                            if !x86::gemm_vnni(rows, d, &packed, &mut outs[2], &mut scratch) {
                                outs[2] = outs[0].clone();
                            }
                            if !x86::gemm_avx2(rows, d, &packed, &mut outs[3], &mut scratch) {
                                outs[3] = outs[0].clone();
                            }
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        for o in 2..4 {
                            outs[o] = outs[0].clone();
                        }
                        for (path, out) in outs.iter().enumerate() {
                            assert_eq!(
                                &out[..rb * l],
                                &want[..],
                                "path {path} d={d} L={l} rb={rb}"
                            );
                            assert!(out[rb * l..].iter().all(|&x| x == SENTINEL));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fused_scores_equal_the_dots_then_the_formula() {
        let mut rng = Rng(23);
        for (d, c, rb) in [
            (768, 9, 50),
            (33, 1, 7),
            (100, 8, 9),
            (777, 17, 13),
            (64, 3, 1),
        ] {
            let rows: Vec<i8> = (0..rb * d).map(|_| rng.next() as u8 as i8).collect();
            let row_scales: Vec<f32> = (0..rb).map(|i| 0.01 + i as f32 * 0.003).collect();
            let col: Vec<i16> = (0..d).map(|_| rng.within(2000) as i16).collect();
            let scale = 1.7e-4;
            let unit = |rng: &mut Rng| rng.within(1000) as f64 / 1000.0;
            let r: Vec<f64> = (0..rb * c).map(|_| unit(&mut rng)).collect();
            let classes: Vec<u32> = (0..rb)
                .map(|i| ((i * 5) % ((c + 1) * (c + 1))) as u32)
                .collect();
            let coefs: Vec<f64> = (0..c).map(|_| unit(&mut rng)).collect();
            let table: Vec<f64> = (0..(c + 1) * (c + 1) * c).map(|_| unit(&mut rng)).collect();
            let terms = TokenTerms {
                r: &r,
                classes: &classes,
                coefs: &coefs,
                columns: 1,
                table: &table,
                skip: None,
            };
            let mut out = vec![f64::NAN; rb];
            if !dot_score_rows(&rows, &row_scales, d, (&col, scale), &terms, &mut out) {
                assert!(!vnni_available());
                continue;
            }
            // One column (a row at a time) and three (rows in pairs, the odd last one alone).
            let mut dots = vec![0i32; 4 * rb];
            dot_rows_i8_i16(&rows, d, &[&col], &mut dots[..rb]);
            dot_rows_i8_i16(&rows, d, &[&col, &col, &col], &mut dots[rb..]);
            for i in 0..rb {
                let x = (f64::from(dots[i]) * (f64::from(row_scales[i]) * scale)) as f32;
                let x = f64::from(x);
                let t = &table[classes[i] as usize * c..][..c];
                let want: f64 = (0..c).map(|j| r[i * c + j] * (x * coefs[j] + t[j])).sum();
                assert!(
                    (out[i] - want).abs() <= 1e-12 * (1.0 + want.abs()),
                    "d={d} C={c} row {i}: {} vs {want}",
                    out[i]
                );
            }
        }
    }

    /// Prefetching reaches `PREFETCH_AHEAD` past the rows, beyond a small allocation's end
    /// (into unmapped memory, for all the test knows): a hint that must neither fault nor
    /// change a result, in every kernel that prefetches.
    #[test]
    fn prefetching_past_the_rows_changes_nothing() {
        let mut rng = Rng(29);
        let (d, rb, c) = (40, 3, 2);
        let rows: Vec<i8> = (0..rb * d).map(|_| rng.next() as u8 as i8).collect();
        let col: Vec<i16> = (0..d).map(|_| rng.within(900) as i16).collect();
        let (r, classes, coefs) = (vec![0.5; rb * c], vec![0; rb], vec![1.0; c]);
        let terms = TokenTerms {
            r: &r,
            classes: &classes,
            coefs: &coefs,
            columns: 1,
            table: &[0.25; 2],
            skip: None,
        };
        let run = |prefetch: bool| {
            set_prefetch(prefetch);
            // One column (a row at a time) and three (rows in pairs, the odd last one alone).
            let mut dots = vec![0i32; 4 * rb];
            dot_rows_i8_i16(&rows, d, &[&col], &mut dots[..rb]);
            dot_rows_i8_i16(&rows, d, &[&col, &col, &col], &mut dots[rb..]);
            let mut raws = vec![0.0; rb];
            let fused = dot_score_rows(&rows, &[1.0; 3], d, (&col, 0.5), &terms, &mut raws);
            set_prefetch(true);
            (dots, fused.then_some(raws))
        };
        let (on, off) = (run(true), run(false));
        assert_eq!(on, off);
        // The dots themselves are the exact sums.
        let exact = reference(&rows, &col, rb, 1, d);
        assert!(on.0[..rb]
            .iter()
            .zip(&exact)
            .all(|(&a, &b)| i64::from(a) == b));
        let thrice = exact.iter().flat_map(|&x| [x, x, x]);
        assert!(on.0[rb..]
            .iter()
            .zip(thrice)
            .all(|(&a, b)| i64::from(a) == b));
    }

    #[test]
    fn scratch_and_output_are_reused_across_shapes() {
        // A scratch left longer by a bigger call, and out longer than needed.
        let mut rng = Rng(17);
        let mut scratch = Vec::new();
        for (rb, d, l) in [
            (100, 777, 49),
            (9, 33, 3),
            (0, 5, 2),
            (17, 768, 300),
            (1, 1, 1),
        ] {
            let rows: Vec<i8> = (0..rb * d + d - 1)
                .map(|_| rng.next() as u8 as i8)
                .collect();
            let cols: Vec<i16> = (0..l * d).map(|_| rng.within(100) as i16).collect();
            let packed = PackedCols::new(&cols, l, d);
            let mut out = vec![SENTINEL; rb * l + 1];
            gemm(Rows::I8(&rows), d, &packed, &mut out, &mut scratch);
            let want = reference(&rows, &cols, rb, l, d);
            assert!(out[..rb * l]
                .iter()
                .zip(&want)
                .all(|(&g, &w)| i64::from(g) == w));
            assert_eq!(out[rb * l], SENTINEL);
        }
    }

    #[test]
    fn vnni_detection_matches_std() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            vnni_available(),
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
        );
        #[cfg(not(target_arch = "x86_64"))]
        assert!(!vnni_available());
    }
}
