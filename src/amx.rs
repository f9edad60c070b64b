//! Intel AMX tile kernels for the ranking pass's integer dots: the exact sums
//! `Σ_j q_kj·u_lj` of int8 index rows (or an f32/f16 index's i16 ranking copy) with i16 query
//! columns, as [`crate::int_kernels`] computes them, through `tdpbssd` (one instruction
//! multiplies a 16 × 64 int8 tile of rows by a 64 × 16 int8 tile of columns: 16 384
//! multiply-adds against 32 for a VNNI `vpdpwssd`). [`dot_rows`] serves a single query's few
//! columns, [`gemm`] a batch's many.
//!
//! AMX multiplies int8 by int8, so each i16 column value is split exactly as
//! `u = 256·hi + lo` with `hi, lo` in int8 (`lo = u mod 256` in [−128, 127], which needs
//! `|u| ≤ 32 639` for `hi` to fit): one query column becomes two tile columns (8 query
//! columns in a tile's 16), and `dot = 256·(q·hi) + q·lo` in wrapping i32 — the exact sum
//! modulo 2³², so bit-identical to the VNNI, AVX2 and portable kernels (the caller keeps the
//! true sum within i32, see `int_kernels`). i16 rows are split the same way into two planes,
//! which a ranking copy keeps [`Tiled`] for the tiles (rows in the order the tile loads take
//! them; [`dot_rows_tiled`], [`gemm_tiled`]).
//!
//! Why (BENCHMARKS.md, session 12): one core, a row's dots with 5 columns took 43 ns through
//! VNNI against 21 through the tiles (whatever the columns), so long-segment int8 queries
//! were bound by instructions beside the read; and the batches' GEMM, 60 % of a batch on
//! VNNI, fell to a few %.
//!
//! Only on x86_64 Linux CPUs with AMX-TILE and AMX-INT8, once the kernel grants the process
//! the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`AmxCols::new`] says `None`
//! elsewhere, and callers keep the other kernels. `SEGINF_AMX=off` in the environment turns
//! the tiles off (for comparisons, or for a host whose alternate signal stacks are too small
//! for the AMX signal frame: after the grant Linux refuses smaller `sigaltstack`s).

use crate::int_kernels::Rows;

/// Query columns split and packed as the tiles' B operand: tiles of 16 tile columns (8 query
/// columns), 64 features a step.
pub struct AmxCols {
    /// One block per column tile `t` and step `s` (at `t·steps + s`): group `g` (features
    /// `64s + 4g .. 64s + 4g + 4`), tile column `n` (query column `8t + n mod 8`: its `hi`
    /// for `n < 8`, `lo` from 8 on, so that a row of sums is 8 `hi` then 8 `lo` and the
    /// combine is two vectors), byte `b` at `64g + 4n + b`; zero past the last column.
    tiles: Vec<Block>,
    l: usize,
    d: usize,
}

/// 1024 bytes on a cache line's boundary: a tile of 16 rows of 64 bytes (loads that
/// straddle lines took twice as long).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([i8; 1024]);

/// The query columns of one tile of tile columns (two tile columns each).
pub const TILE_COLUMNS: usize = 8;

/// The largest `|u|` whose `hi = (u − lo) / 256` fits in int8.
pub const MAX_SPLIT: i32 = 127 * 256 + 127;

impl AmxCols {
    /// Packs `cols` (`l ≥ 1` columns of `d`, row-major) when the tiles can run them: AMX is
    /// available, `d` is a positive multiple of 64 (whole steps: 768 and the other usual
    /// encoder widths) and every `|u| ≤ 32 639`. `None` otherwise (also when
    /// `cols.len() != l·d`).
    pub fn new(cols: &[i16], l: usize, d: usize) -> Option<AmxCols> {
        let fits = l > 0
            && d > 0
            && d.is_multiple_of(64)
            && cols.len() == l * d
            && cols.iter().all(|&u| i32::from(u).abs() <= MAX_SPLIT);
        if !fits || !available() {
            return None;
        }
        let steps = d / 64;
        let mut tiles = vec![Block([0; 1024]); l.div_ceil(TILE_COLUMNS) * steps];
        for (c, col) in cols.chunks_exact(d).enumerate() {
            let (t, n) = (c / TILE_COLUMNS, c % TILE_COLUMNS);
            for (j, &u) in col.iter().enumerate() {
                let (hi, lo) = split(u);
                let block = &mut tiles[t * steps + j / 64].0;
                let at = 64 * (j % 64 / 4) + j % 4;
                block[at + 4 * n] = hi;
                block[at + 4 * (n + TILE_COLUMNS)] = lo;
            }
        }
        Some(AmxCols { tiles, l, d })
    }

    /// The number of tiles of tile columns.
    fn column_tiles(&self) -> usize {
        self.l.div_ceil(TILE_COLUMNS)
    }
}

/// `u = 256·hi + lo` with `lo` in [−128, 127] (`|u| ≤` [`MAX_SPLIT`]).
pub(crate) fn split(u: i16) -> (i8, i8) {
    let lo = u as i8; // u mod 256, as a signed byte
    let hi = (i32::from(u) - i32::from(lo)) >> 8;
    (hi as i8, lo)
}

/// Whether the tile kernels run here: the CPU has AMX-TILE and AMX-INT8, the OS enables the
/// tile state, the kernel grants it to this process, and `SEGINF_AMX` is not `off` (asked
/// once).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::env::var("SEGINF_AMX").map_or(true, |v| v != "off") && imp::request_tiles()
    })
}

/// Rows per group of the kernel: four 16-row tiles against each step's columns.
pub const GROUP: usize = 64;

/// `out[i·L + l] = Σ_j rows[i·d + j]·u_l[j]` (exact modulo 2³², as every integer kernel) for
/// the leading whole groups of [`GROUP`] rows of `rows` (`rows.len() / d` rows): returns how
/// many rows that was, which the caller's other kernels follow. 0, doing nothing, when the
/// tiles cannot run here or the shapes do not match (`out` shorter than rows × L).
/// Takes up to [`TILE_COLUMNS`] columns (one tile).
pub fn dot_rows(rows: &[i8], d: usize, cols: &AmxCols, out: &mut [i32]) -> usize {
    match row_count(rows.len(), d, cols, out.len()) {
        Some(rb) if cols.l <= TILE_COLUMNS && available() => {
            imp::dot_rows(Layout::Rows(rows), rb, cols, out)
        }
        _ => 0,
    }
}

/// The layout of rows kept *tiled*, as the tiles load them (a [`crate::index::RankingCopy`]
/// keeps its rows so where the tiles run): rows in groups of [`GROUP`], a group `planes·GROUP·d`
/// bytes — per plane (one for int8 values; two for i16 values, the high bytes then the low
/// ones, `u = 256·hi + lo`), per step of 64 values, per quarter of 16 rows, the quarter's 64
/// bytes of each row one after another: the 1 KB one tile load takes. [`dot_rows_tiled`] then
/// reads memory in order, which the hardware prefetchers follow; rows in place, 16 rows a
/// load at stride `d`, they do not, and two cores read them ~15 % slower (BENCHMARKS.md,
/// session 15). The last group is padded with zero rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiled {
    pub d: usize,
    pub planes: usize,
}

impl Tiled {
    /// The bytes of one group.
    pub fn group_bytes(self) -> usize {
        self.planes * GROUP * self.d
    }

    /// The bytes that hold `rows` rows (whole groups).
    pub fn bytes(self, rows: usize) -> usize {
        rows.div_ceil(GROUP) * self.group_bytes()
    }

    /// Whether the kernels take rows of this shape against `cols`: their `d`, one or two
    /// planes.
    fn fits(self, cols: &AmxCols) -> bool {
        self.d == cols.d && (1..=2).contains(&self.planes)
    }

    /// Where value `j` of plane `plane` of row `row` lies (`d` a multiple of 64).
    pub fn at(self, row: usize, plane: usize, j: usize) -> usize {
        let (g, r) = (row / GROUP, row % GROUP);
        g * self.group_bytes()
            + plane * GROUP * self.d
            + (j / 64) * 4096
            + (r / 16) * 1024
            + (r % 16) * 64
            + j % 64
    }
}

/// As [`dot_rows`] for rows kept [`Tiled`] (`tiled`: whole groups, from a group's first
/// row): the exact sums `Σ_j u_kj·u_lj` modulo 2³² of every row's value `u` (`256·hi + lo`
/// for two planes) with every column, for all `tiled.len() / group_bytes` groups; returns
/// how many rows that was. 0, doing nothing, when the tiles cannot run here or the shapes
/// do not match (`d` not the columns', not whole groups, `out` shorter than rows × L, more
/// than one tile of columns, planes other than 1 or 2).
pub fn dot_rows_tiled(tiled: &[i8], shape: Tiled, cols: &AmxCols, out: &mut [i32]) -> usize {
    let groups = tiled.len().checked_div(shape.group_bytes()).unwrap_or(0);
    let fits = shape.fits(cols)
        && tiled.len() == groups * shape.group_bytes()
        && out.len() >= groups * GROUP * cols.l;
    match fits && cols.l <= TILE_COLUMNS && available() {
        true => imp::dot_rows(
            Layout::Tiled(tiled, shape.planes),
            GROUP * groups,
            cols,
            out,
        ),
        false => 0,
    }
}

/// The number of rows in `len` values stored as rows of `d` when they match the columns
/// (`d == cols.d`, whole rows) and `out` holds `rows × L` sums; `None` otherwise.
fn row_count(len: usize, d: usize, cols: &AmxCols, out: usize) -> Option<usize> {
    let rb = len.checked_div(d)?;
    (d == cols.d && len == rb * d && out >= rb * cols.l).then_some(rb)
}

/// Reusable memory of [`gemm`]: a group's rows, copied (int8) or split into two int8
/// planes (i16) on cache lines.
#[derive(Default)]
pub struct GemmScratch(Vec<Line>);

/// 64 bytes on a cache line's boundary.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([i8; 64]);

/// `out[i·L + l] = Σ_j rows[i·d + j]·u_l[j]` (exact modulo 2³², as every integer kernel) for
/// every row of `rows` (`len / d` of them) and all `L` columns: groups of 32 rows against
/// pairs of column tiles. The rows are an int8 index's values, or the i16 values of an
/// f32/f16 index's ranking copy, which the copy keeps within `±i16_bound` (split as the
/// columns are, into two int8 planes; the bound is not read for int8 rows). `false`, doing
/// nothing, when the tiles cannot run here, the shapes do not match (`out` shorter than
/// rows × L) or i16 rows' bound is past the split's range.
pub fn gemm(
    (rows, i16_bound): (Rows, i64),
    d: usize,
    cols: &AmxCols,
    out: &mut [i32],
    scratch: &mut GemmScratch,
) -> bool {
    let (len, splits) = match rows {
        Rows::I8(r) => (r.len(), true),
        Rows::I16(r) => (r.len(), (0..=i64::from(MAX_SPLIT)).contains(&i16_bound)),
    };
    let Some(rb) = row_count(len, d, cols, out.len()) else {
        return false;
    };
    if !splits || !available() {
        return false;
    }
    imp::gemm(Source::Fill(rows), rb, cols, out, &mut scratch.0);
    true
}

/// As [`gemm`] for rows `rows` of rows kept [`Tiled`] (`tiled` from row 0; any range): a
/// group's rows are gathered to lines as they are (no split). `false`, doing nothing, when
/// the tiles cannot run here or the shapes do not match.
pub fn gemm_tiled(
    (tiled, shape): (&[i8], Tiled),
    rows: std::ops::Range<usize>,
    cols: &AmxCols,
    out: &mut [i32],
    scratch: &mut GemmScratch,
) -> bool {
    let fits = shape.fits(cols)
        && rows.start <= rows.end
        && tiled.len() >= shape.bytes(rows.end)
        && out.len() >= rows.len() * cols.l;
    if !fits || !available() {
        return false;
    }
    let rb = rows.len();
    imp::gemm(
        Source::Tiled(tiled, shape, rows.start),
        rb,
        cols,
        out,
        &mut scratch.0,
    );
    true
}

/// Where [`gemm`]'s tiles load a group's rows from.
enum Source<'a> {
    /// Split into planes on cache lines first (int8 rows are copied as they are).
    Fill(Rows<'a>),
    /// Rows kept [`Tiled`], from the given row on, gathered to lines as they are.
    Tiled(&'a [i8], Tiled, usize),
}

/// How [`dot_rows`]'s rows lie in memory.
#[derive(Clone, Copy)]
enum Layout<'a> {
    /// int8 rows one after another (`d` bytes each), read in place 16 rows a tile load.
    Rows(&'a [i8]),
    /// Rows kept [`Tiled`] in this many planes.
    Tiled(&'a [i8], usize),
}

/// Writes (or, when `add`, adds) one 16-row tile of sums of a column tile (16 × 16 i32,
/// row-major: 8 `hi` then 8 `lo` sums) into `out` (rows of `l`, starting at query column
/// `first`) for its first `rows` rows: `256·hi + lo` per query column, shifted left by
/// `shift` (8 for the high plane of i16 rows: its sums count 256 times), wrapping. The
/// AVX-512 kernels call `imp::combine_tile`, which does whole tiles itself and leaves the
/// partial ones to this.
#[inline(always)]
fn combine_into(
    sums: &[i32; 256],
    rows: usize,
    (l, first): (usize, usize),
    shift: u32,
    add: bool,
    out: &mut [i32],
) {
    let cols = (l - first).min(TILE_COLUMNS);
    let combined = |hi: &[i32], lo: &[i32], o: &mut [i32]| {
        for ((o, &h), &lo) in o.iter_mut().zip(hi).zip(lo) {
            let v = (h << 8).wrapping_add(lo) << shift;
            *o = if add { o.wrapping_add(v) } else { v };
        }
    };
    for (o, s) in out
        .chunks_exact_mut(l)
        .zip(sums.chunks_exact(16))
        .take(rows)
    {
        let (hi, lo) = s.split_at(TILE_COLUMNS);
        match <&mut [i32; TILE_COLUMNS]>::try_from(&mut o[first..first + cols]) {
            Ok(o) => combined(hi, lo, o), // a whole tile: fixed length, one vector
            Err(_) => combined(hi, lo, &mut o[first..first + cols]),
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[allow(unsafe_code)]
mod imp {
    use std::arch::asm;
    use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};

    use super::{combine_into, AmxCols, Layout, Line, Rows, Source, Tiled};

    /// `arch_prctl` codes (linux/arch/x86/include/uapi/asm/prctl.h) and the tile data's
    /// XSAVE feature number.
    const ARCH_REQ_XCOMP_PERM: libc::c_int = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_ulong = 18;

    /// CPUID.7.0:EDX bits 24 (AMX-TILE) and 25 (AMX-INT8); the OS saves the tile state
    /// (XCR0 bits 17 and 18, read once CPUID.1:ECX.OSXSAVE says XGETBV is there); Linux
    /// grants it to the process. And AVX-512 F + BW, which every CPU with AMX has and
    /// [`fill`] is compiled for.
    pub fn request_tiles() -> bool {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")) {
            return false;
        }
        // SAFETY: CPUID exists on every x86_64 CPU; XGETBV only runs when OSXSAVE is set.
        unsafe {
            if __cpuid(0).eax < 7 || __cpuid(1).ecx & (1 << 27) == 0 {
                return false;
            }
            let edx = __cpuid_count(7, 0).edx;
            if edx & (3 << 24) != 3 << 24 || xcr0() & (3 << 17) != 3 << 17 {
                return false;
            }
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }

    #[target_feature(enable = "xsave")]
    unsafe fn xcr0() -> u64 {
        // SAFETY: the caller checked OSXSAVE.
        unsafe { _xgetbv(0) }
    }

    /// The 64-byte tile configuration (`ldtilecfg`'s operand, palette 1).
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    /// Every tile 16 rows of 64 bytes (which tile holds what: [`group`] for a single query,
    /// [`tile_pair`] for the GEMM).
    fn config() -> Config {
        let mut c = Config {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            (c.rows[t], c.bytes_per_row[t]) = (16, 64);
        }
        c
    }

    /// Up to this many column tiles (64 query columns), [`gemm`] loads rows kept tiled where
    /// they lie rather than copying them to lines first. One core, i16 rows kept tiled, ns a
    /// tile product (`int_kernels` bench, session 18): 32 columns 37–38 in place against
    /// 44–46 copied, 64 25–26 against 26–28, 96 equal, 128 19–20 against 18–20, 200 19
    /// against 15–17. The copy's cost is paid once a group, and a group's 1 KB blocks lie
    /// 4 KB apart (the same L1 sets) in place, where the copy's lines at stride d do not:
    /// with many column tiles every block is loaded again many times.
    const IN_PLACE_TILES: usize = 8;
    /// Four tiles of sums (16 × 16 i32 each), stored on cache lines.
    #[repr(C, align(64))]
    struct Sums([[i32; 256]; 4]);

    /// How far ahead of the group being multiplied the kernel asks for rows (into L2): rows
    /// read in place, and rows kept tiled.
    const AHEAD: usize = 96 << 10;
    const TILED_AHEAD: usize = 16 << 10;

    /// The body of [`super::dot_rows`] and [`super::dot_rows_tiled`]: shapes checked there;
    /// the leading `rb / 64` groups of 64 rows.
    pub fn dot_rows(rows: Layout, rb: usize, cols: &AmxCols, out: &mut [i32]) -> usize {
        // SAFETY: the caller checked `available`, which needs AVX-512 F and BW.
        unsafe { dot_rows_avx512(rows, rb, cols, out) }
    }

    /// [`dot_rows`] compiled for AVX-512 (the sums' combine vectorises): per group of 64 rows,
    /// each plane against every step's columns, its sums combined into `out` (a high plane's
    /// counting 256 times, the low plane's added).
    ///
    /// # Safety
    /// As [`dot_rows`]: AMX granted, AVX-512 F and BW present.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn dot_rows_avx512(rows: Layout, rb: usize, cols: &AmxCols, out: &mut [i32]) -> usize {
        let (d, l) = (cols.d, cols.l);
        let groups = rb / super::GROUP;
        let (base, planes) = match rows {
            Layout::Rows(r) => (r.as_ptr(), 1),
            Layout::Tiled(t, planes) => (t.as_ptr(), planes),
        };
        let cfg = config();
        let mut sums = Sums([[0; 256]; 4]);
        // SAFETY: AMX was granted (the caller checked `available`); every tile is 16 rows
        // of 64 bytes as configured; a group's loads read its 64·planes·d bytes from
        // `base + 64g·planes·d` (16 rows at stride d for rows in place, 1 KB blocks for tiled
        // ones), within the rows for g < rb / 64; the column loads read one `Block` a step
        // (d / 64 of them); the stores write 16 rows of 64 bytes into `sums`.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) &cfg, options(nostack, readonly));
            for g in 0..groups {
                let region = base.add(64 * g * planes * d);
                for plane in 0..planes {
                    let quarters = match rows {
                        Layout::Rows(_) => Quarters {
                            p: region,
                            stride: d,
                            quarter: 16 * d,
                            step: 64,
                            ask: (region.wrapping_add(AHEAD), 1),
                        },
                        Layout::Tiled(..) => {
                            let p = region.add(plane * 64 * d);
                            Quarters {
                                p,
                                stride: 64,
                                quarter: 1024,
                                step: 4096,
                                ask: (p.wrapping_add(TILED_AHEAD), 8),
                            }
                        }
                    };
                    group(quarters, d, cols, &mut sums.0);
                    let shift = if planes == 2 && plane == 0 { 8 } else { 0 };
                    for (q, sums) in sums.0.iter().enumerate() {
                        let at = &mut out[(64 * g + 16 * q) * l..];
                        combine_tile(sums, 16, (l, 0), shift, plane == 1, at);
                    }
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
        64 * groups
    }

    /// Stores four sum tiles (16 rows of 64 bytes each) into `sums[0..4]`, in that order.
    macro_rules! store_sums {
        ($sums:expr, $t0:literal, $t1:literal, $t2:literal, $t3:literal) => {
            asm!(
                concat!("tilestored [{s0} + {sixty_four}*1], tmm", $t0),
                concat!("tilestored [{s1} + {sixty_four}*1], tmm", $t1),
                concat!("tilestored [{s2} + {sixty_four}*1], tmm", $t2),
                concat!("tilestored [{s3} + {sixty_four}*1], tmm", $t3),
                s0 = in(reg) $sums[0].as_mut_ptr(),
                s1 = in(reg) $sums[1].as_mut_ptr(),
                s2 = in(reg) $sums[2].as_mut_ptr(),
                s3 = in(reg) $sums[3].as_mut_ptr(),
                sixty_four = in(reg) 64usize,
                options(nostack),
            )
        };
    }

    /// The body of [`super::gemm`] (shapes and values checked there): per group of 32 rows,
    /// the rows copied (int8) or split into high and low int8 planes (i16: `u = 256·hi +
    /// lo`) on cache lines, then every pair of column tiles against them, plane by plane.
    pub fn gemm(rows: Source, rb: usize, cols: &AmxCols, out: &mut [i32], scratch: &mut Vec<Line>) {
        // SAFETY: the caller checked `available`, which needs AVX-512 F and BW.
        unsafe { gemm_avx512(rows, rb, cols, out, scratch) }
    }

    /// [`gemm`] compiled for AVX-512 (the sums' combine vectorises).
    ///
    /// # Safety
    /// As [`gemm`]: AMX granted, AVX-512 F and BW present.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn gemm_avx512(
        rows: Source,
        rb: usize,
        cols: &AmxCols,
        out: &mut [i32],
        scratch: &mut Vec<Line>,
    ) {
        let (d, l) = (cols.d, cols.l);
        let (steps, tiles) = (d / 64, cols.column_tiles());
        let planes = match rows {
            Source::Fill(Rows::I8(_)) => 1,
            Source::Fill(Rows::I16(_)) => 2,
            Source::Tiled(_, shape, _) => shape.planes,
        };
        let plane_lines = 32 * steps;
        scratch.resize(planes * plane_lines, Line([0; 64]));
        let cfg = config();
        let mut sums = Sums([[0; 256]; 4]);
        // SAFETY: AMX was granted and the CPU has AVX-512 F and BW (the caller checked
        // `available`); every tile is 16 rows of 64 bytes as configured; the row loads read
        // 16 rows of 64 bytes at stride d within a plane of `scratch` (32 rows of d bytes),
        // or a 1 KB block of tiled rows (whole groups of 32 rows within the rows that
        // `gemm_tiled` checked, from a quarter's first row: `Tiled::at`); the column loads
        // read one `Block` of `cols.tiles` (t < tiles, s < steps); the stores write 16 rows
        // of 64 bytes into `sums`.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) &cfg, options(nostack, readonly));
            // The bytes that hold rows `a..b` (for tiled rows, the groups around them).
            let bytes_of = |a: usize, b: usize| match rows {
                Source::Fill(Rows::I8(r)) => (r.as_ptr().cast::<i8>().wrapping_add(a * d), b - a),
                Source::Fill(Rows::I16(r)) => {
                    (r.as_ptr().cast::<i8>().wrapping_add(2 * a * d), 2 * (b - a))
                }
                Source::Tiled(t, shape, first) => {
                    let g = (first + a) / super::GROUP * shape.group_bytes();
                    let len = shape.bytes(first + b) - g;
                    (t.as_ptr().wrapping_add(g), if a < b { len } else { 0 })
                }
            };
            // Every step of a group's tile pairs asks for some lines of the next group's rows;
            // `asked` is where the asking stopped (tiled rows of two groups share lines).
            let pair_steps = planes * tiles.div_ceil(2) * steps;
            let mut asked = std::ptr::null::<i8>();
            for g in (0..rb).step_by(32) {
                let n = (rb - g).min(32);
                // Planes are copied too: loaded in place (stride 2d) they made an f32 batch of
                // 300 queries 15–20 % slower than this copy into lines (BENCHMARKS.md,
                // session 14), which costs a copy's time where `fill` split every value.
                // Tiled rows of a whole group from a quarter's first row, against few column
                // tiles: loaded where they lie, two 1 KB blocks a step ([`IN_PLACE_TILES`]).
                let in_place = match rows {
                    Source::Tiled(t, shape, first)
                        if n == 32 && (first + g) % 16 == 0 && tiles <= IN_PLACE_TILES =>
                    {
                        Some((t, shape, first + g))
                    }
                    _ => None,
                };
                if in_place.is_none() {
                    match rows {
                        Source::Fill(rows) => fill(rows, (g, n), d, scratch),
                        Source::Tiled(t, shape, first) => {
                            fill_tiled((t, shape), first + g, n, scratch)
                        }
                    }
                }
                let next = (g + 32).min(rb);
                let (at, len) = bytes_of(next, (next + 32).min(rb));
                let end = at.wrapping_add(len);
                // Past what was asked already (both halves of a tiled group ask for the next).
                let at = if asked > at { asked.min(end) } else { at };
                asked = end;
                let mut ahead = Ahead {
                    at,
                    end,
                    per_step: (end as usize - at as usize).div_ceil(64 * pair_steps),
                };
                for plane in 0..planes {
                    let a = match in_place {
                        Some((t, shape, row)) => RowTiles {
                            first: t.as_ptr().add(shape.at(row, plane, 0)),
                            second: t.as_ptr().add(shape.at(row + 16, plane, 0)),
                            stride: 64,
                            step: 4096,
                        },
                        None => {
                            let a = scratch.as_ptr().add(plane * plane_lines).cast::<i8>();
                            RowTiles {
                                first: a,
                                second: a.add(16 * d),
                                stride: d,
                                step: 64,
                            }
                        }
                    };
                    // High plane of i16 rows: its sums count 256 times.
                    let shift = if planes == 2 && plane == 0 { 8 } else { 0 };
                    for t in (0..tiles).step_by(2) {
                        let two = t + 1 < tiles;
                        tile_pair(a, d, cols, (t, two), &mut sums.0, &mut ahead);
                        for (q, tile) in [(0, t), (1, t + 1)] {
                            if q == 1 && !two {
                                continue;
                            }
                            let first = super::TILE_COLUMNS * tile;
                            let add = plane == 1;
                            let at = &mut out[g * l..];
                            combine_tile(&sums.0[2 * q], n.min(16), (l, first), shift, add, at);
                            if n > 16 {
                                let at = &mut out[(g + 16) * l..];
                                combine_tile(
                                    &sums.0[2 * q + 1],
                                    n - 16,
                                    (l, first),
                                    shift,
                                    add,
                                    at,
                                );
                            }
                        }
                    }
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// [`combine_into`] with AVX-512 for a whole tile of columns (8 query columns, the
    /// common case), else [`combine_into`] itself. Per row of sums: `256·hi + lo` as one
    /// shift and one add of the row's two halves (the compiled generic loop shuffled the
    /// values lane by lane: a third of a batch's tile GEMM, session 18).
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn combine_tile(
        sums: &[i32; 256],
        rows: usize,
        (l, first): (usize, usize),
        shift: u32,
        add: bool,
        out: &mut [i32],
    ) {
        use std::arch::x86_64::*;
        if l - first < super::TILE_COLUMNS {
            return combine_into(sums, rows, (l, first), shift, add, out);
        }
        let count = _mm_cvtsi32_si128(shift as i32);
        for (o, s) in out
            .chunks_exact_mut(l)
            .zip(sums.chunks_exact(16))
            .take(rows)
        {
            let o = &mut o[first..first + super::TILE_COLUMNS];
            // SAFETY: `s` holds 16 values and `o` 8 (both slices just taken).
            unsafe {
                let v = _mm512_loadu_si512(s.as_ptr().cast());
                let (hi, lo) = (_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
                let mut x =
                    _mm256_sll_epi32(_mm256_add_epi32(_mm256_slli_epi32::<8>(hi), lo), count);
                if add {
                    x = _mm256_add_epi32(x, _mm256_loadu_si256(o.as_ptr().cast()));
                }
                _mm256_storeu_si256(o.as_mut_ptr().cast(), x);
            }
        }
    }

    /// Rows `g .. g + n` of `rows` (d each) into the planes of `lines` (32 rows of d bytes
    /// each, zero past the n rows): as they are (int8), or their high and low halves (i16).
    /// With AVX-512 BW (every CPU with AMX has it) the split vectorises 32 values at a time:
    /// as SSE2 code it was 40 % of the f16 index's tile GEMM (`perf`, session 12).
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn fill(rows: Rows, (g, n): (usize, usize), d: usize, lines: &mut [Line]) {
        let bytes = lines.len() * 64;
        // SAFETY: `lines` is `bytes` bytes of plain i8 arrays, viewed as one slice.
        let flat =
            unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<i8>(), bytes) };
        let plane = 32 * d;
        match rows {
            Rows::I8(r) => {
                flat[..n * d].copy_from_slice(&r[g * d..(g + n) * d]);
                flat[n * d..plane].fill(0);
            }
            Rows::I16(r) => {
                let (hi, lo) = flat.split_at_mut(plane);
                for ((h, l), &u) in hi.iter_mut().zip(lo.iter_mut()).zip(&r[g * d..(g + n) * d]) {
                    let low = u as i8;
                    *l = low;
                    *h = ((i32::from(u) - i32::from(low)) >> 8) as i8;
                }
                hi[n * d..].fill(0);
                lo[n * d..plane].fill(0);
            }
        }
    }

    /// Rows `first .. first + n` of rows kept [`Tiled`] into the planes of `lines` as [`fill`]
    /// leaves them (zero past the n rows).
    fn fill_tiled((tiled, shape): (&[i8], Tiled), first: usize, n: usize, lines: &mut [Line]) {
        let per_row = shape.d / 64;
        for (plane, dst) in lines.chunks_exact_mut(32 * per_row).enumerate() {
            for (r, row_lines) in dst.chunks_exact_mut(per_row).enumerate() {
                for (i, line) in row_lines.iter_mut().enumerate() {
                    let at = shape.at(first + r, plane, 64 * i);
                    line.0 = match r < n {
                        true => tiled[at..at + 64].try_into().unwrap_or([0; 64]),
                        false => [0; 64],
                    };
                }
            }
        }
    }

    /// Where [`tile_pair`] loads a plane of 32 rows: rows 0–15 from `first` and 16–31 from
    /// `second`, `stride` bytes from one row to the next, `step` from one step of 64 values
    /// to the next (lines of the scratch: stride d, step 64; rows kept tiled: 64 and 4096).
    #[derive(Clone, Copy)]
    struct RowTiles {
        first: *const i8,
        second: *const i8,
        stride: usize,
        step: usize,
    }

    /// Rows 0–15 and 16–31 of a plane (where `a` says) against column tile `t` and, when
    /// `two`, `t + 1`: sums into `sums` as [rows 0–15 × t, rows 16–31 × t, rows 0–15 × t+1,
    /// rows 16–31 × t+1].
    ///
    /// # Safety
    /// As [`gemm`]: tiles configured by [`config`], the plane's 32 rows of d where `a` says,
    /// t (and t + 1 when `two`) below the column tiles.
    #[inline(always)]
    unsafe fn tile_pair(
        a: RowTiles,
        d: usize,
        cols: &AmxCols,
        (t, two): (usize, bool),
        sums: &mut [[i32; 256]; 4],
        ahead: &mut Ahead,
    ) {
        let steps = d / 64;
        let b = cols.tiles.as_ptr().cast::<i8>();
        // SAFETY: by the caller.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for s in 0..steps {
                ahead.step();
                asm!(
                    "tileloadd tmm4, [{b} + {sixty_four}*1]",
                    "tileloadd tmm6, [{a0} + {stride}*1]",
                    "tileloadd tmm7, [{a1} + {stride}*1]",
                    "tdpbssd tmm0, tmm6, tmm4",
                    "tdpbssd tmm1, tmm7, tmm4",
                    b = in(reg) b.add(1024 * (t * steps + s)),
                    sixty_four = in(reg) 64usize,
                    a0 = in(reg) a.first.add(a.step * s),
                    a1 = in(reg) a.second.add(a.step * s),
                    stride = in(reg) a.stride,
                    options(nostack, readonly),
                );
                if two {
                    asm!(
                        "tileloadd tmm5, [{b} + {sixty_four}*1]",
                        "tdpbssd tmm2, tmm6, tmm5",
                        "tdpbssd tmm3, tmm7, tmm5",
                        b = in(reg) b.add(1024 * ((t + 1) * steps + s)),
                        sixty_four = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                }
            }
            store_sums!(sums, "0", "1", "2", "3");
        }
    }

    /// The rows of the next group, asked for into L2 a few lines at each step of the current
    /// group's tile pairs: read in one burst by [`fill`], the group's rows missed the cache
    /// on every line (the tile work between bursts leaves the hardware prefetchers idle;
    /// `perf`: the copy's loads were 40 % of the i16 GEMM).
    struct Ahead {
        at: *const i8,
        end: *const i8,
        per_step: usize,
    }

    impl Ahead {
        #[inline(always)]
        fn step(&mut self) {
            for _ in 0..self.per_step {
                if self.at >= self.end {
                    return;
                }
                crate::int_kernels::x86::prefetch_l2(self.at.cast());
                self.at = self.at.wrapping_add(64);
            }
        }
    }

    /// Every `every`-th of 16 lines from `p` into L2 (where the rows to come lie: the
    /// prefetches never fault).
    #[inline(always)]
    fn ask(p: *const i8, every: usize) {
        for line in (0..16).step_by(every) {
            crate::int_kernels::x86::prefetch_l2(p.wrapping_add(64 * line).cast());
        }
    }

    /// Where a group's tiles load from: quarter `q` of step `s` (16 rows of 64 bytes,
    /// `stride` apart) at `p + q·quarter + s·step`.
    struct Quarters {
        p: *const i8,
        stride: usize,
        quarter: usize,
        step: usize,
        /// Where the rows asked for at step 0 begin, and every how many lines of them.
        ask: (*const i8, usize),
    }

    /// 64 rows of d values (d a multiple of 64) against every step's columns, the four
    /// quarters' sums stored into `sums`. Step `s` asks for 4 KB of the rows ahead from
    /// `ask + 4096·s`, 1 KB beside each tile load (a group reads 64·d bytes in d / 64 steps):
    /// rows read in place (16 rows 768 bytes apart a tile load) every line [`AHEAD`] on,
    /// which the hardware prefetchers do not follow (from memory: ~120 ns a row without
    /// asking, 31–37 with, a plain read 31 on one core; BENCHMARKS.md session 12); tiled rows,
    /// read in order, every 8th line [`TILED_AHEAD`] on, which kept two cores' reads ~8 %
    /// faster than the prefetchers alone (session 15).
    ///
    /// # Safety
    /// As [`dot_rows`]: tiles configured by [`config`], the group's rows where `at` says.
    #[inline(always)]
    unsafe fn group(at: Quarters, d: usize, cols: &AmxCols, sums: &mut [[i32; 256]; 4]) {
        let b = cols.tiles.as_ptr().cast::<i8>();
        // SAFETY: by the caller.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm6",
                "tilezero tmm7",
                options(nostack, nomem)
            );
            for s in 0..d / 64 {
                let (ahead, every) = (at.ask.0.wrapping_add(4096 * s), at.ask.1);
                let row = |quarter: usize| at.p.add(quarter * at.quarter + s * at.step);
                asm!(
                    "tileloadd tmm2, [{b} + {sixty_four}*1]",
                    b = in(reg) b.add(1024 * s),
                    sixty_four = in(reg) 64usize,
                    options(nostack, readonly),
                );
                // Quarter q: its rows into tile `$a`, their products into sum tile `$c`,
                // beside the next 1 KB of rows asked for.
                macro_rules! quarter {
                    ($a:literal, $c:literal, $q:literal) => {
                        ask(ahead.wrapping_add(1024 * $q), every);
                        asm!(
                            concat!("tileloadd tmm", $a, ", [{a} + {stride}*1]"),
                            concat!("tdpbssd tmm", $c, ", tmm", $a, ", tmm2"),
                            a = in(reg) row($q),
                            stride = in(reg) at.stride,
                            options(nostack, readonly),
                        );
                    };
                }
                quarter!("3", "0", 0);
                quarter!("4", "1", 1);
                quarter!("5", "6", 2);
                quarter!("3", "7", 3);
            }
            store_sums!(sums, "0", "1", "6", "7");
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use super::AmxCols;

    pub fn request_tiles() -> bool {
        false
    }

    pub fn dot_rows(_: super::Layout, _: usize, _: &AmxCols, _: &mut [i32]) -> usize {
        0
    }

    pub fn gemm(_: super::Source, _: usize, _: &AmxCols, _: &mut [i32], _: &mut Vec<super::Line>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::int_kernels::tests::Rng;

    /// What the kernels' outputs hold before they run: a value no sum here takes.
    const SENTINEL: i32 = 0x5eed_5eed;

    /// `out` holds the exact sums (in i64) of the first `rows` rows of `vals` (d values each)
    /// with the `l` columns `cols`, and the sentinel past them.
    fn assert_exact_sums(
        out: &[i32],
        (vals, cols): (&[i64], &[i16]),
        (rows, l, d): (usize, usize, usize),
        what: &str,
    ) {
        for i in 0..rows {
            for c in 0..l {
                let exact: i64 = (0..d)
                    .map(|j| vals[i * d + j] * i64::from(cols[c * d + j]))
                    .sum();
                assert_eq!(i64::from(out[i * l + c]), exact, "{what}: row {i} col {c}");
            }
        }
        assert!(
            out[rows * l..].iter().all(|&v| v == SENTINEL),
            "{what}: wrote past the rows' sums"
        );
    }

    #[test]
    fn split_is_exact_over_the_whole_range() {
        for u in -(MAX_SPLIT + 1)..=MAX_SPLIT {
            let (hi, lo) = split(u as i16);
            assert_eq!(256 * i32::from(hi) + i32::from(lo), u, "u = {u}");
        }
    }

    /// Every row and column count the kernel splits differently (pairs of 16-row groups, one
    /// group, a zero-padded last group; full steps and a tail step), int8 rows and i16 rows in
    /// planes (a ranking copy's), against the exact sums in i64, with the extreme values in:
    /// equal wherever the sum fits in i32, which these do; nothing written past the groups.
    #[test]
    fn tile_dots_are_the_exact_integer_sums() {
        if !available() {
            eprintln!("no AMX here: nothing to compare (the other kernels serve)");
            return;
        }
        let mut rng = Rng(11);
        for d in [64, 128, 768, 832] {
            for wide in [false, true] {
                // Rows' and columns' limits as the ranking pass quantises them: int8 rows and
                // their columns' limit, or a copy's balanced one; never above what splits.
                let (row_lim, col_lim) = match wide {
                    false => (127, i64::from(i32::MAX) / (127 * d as i64)),
                    true => ((i64::from(i32::MAX) / d as i64).isqrt(), 0),
                };
                let col_lim = col_lim.max(row_lim).min(i64::from(MAX_SPLIT));
                let row_lim = row_lim.min(i64::from(MAX_SPLIT));
                let value = |rng: &mut Rng, j: usize, lim: i64| match j % 7 {
                    0 => -lim,
                    1 => lim,
                    _ => rng.within(lim),
                };
                for l in 1..=TILE_COLUMNS {
                    for rb in [0, 1, 63, 64, 65, 127, 128, 200] {
                        let vals: Vec<i64> =
                            (0..rb * d).map(|j| value(&mut rng, j, row_lim)).collect();
                        let cols: Vec<i16> = (0..l * d)
                            .map(|j| value(&mut rng, j + 3, col_lim) as i16)
                            .collect();
                        let packed = AmxCols::new(&cols, l, d).expect("AMX packs these columns");
                        // int8 rows in place and tiled, i16 rows tiled in two planes.
                        let whole = rb / GROUP * GROUP;
                        let shape = Tiled {
                            d,
                            planes: 1 + usize::from(wide),
                        };
                        let t = tiled(&vals, shape);
                        let groups = &t[..shape.bytes(whole)];
                        let hows: &[&str] = if wide {
                            &["tiled"]
                        } else {
                            &["tiled", "in place"]
                        };
                        for &how in hows {
                            let mut out = vec![SENTINEL; rb * l + 3];
                            let done = match how {
                                "tiled" => dot_rows_tiled(groups, shape, &packed, &mut out),
                                _ => {
                                    let rows: Vec<i8> = vals.iter().map(|&v| v as i8).collect();
                                    dot_rows(&rows, d, &packed, &mut out)
                                }
                            };
                            assert_eq!(done, whole, "{how}: the whole groups");
                            let what = format!("{how}: d {d} L {l} rb {rb} i16 {wide}");
                            assert_exact_sums(&out, (&vals, &cols), (done, l, d), &what);
                        }
                    }
                }
            }
        }
    }

    /// The GEMM for int8 and i16 rows (split into two planes) against every column count
    /// that fills tiles differently (one tile, a pair, an odd last tile, partial tiles) and
    /// row counts around its groups of 32: the exact sums.
    #[test]
    fn tile_gemm_gives_the_exact_integer_sums() {
        if !available() {
            eprintln!("no AMX here: nothing to compare (the VNNI GEMM serves)");
            return;
        }
        let mut rng = Rng(23);
        let mut scratch = GemmScratch::default();
        for d in [64, 768] {
            // Int8 rows with the int8 limit, i16 rows with the copy's balanced one — and at
            // the split's range, where the sums stay within i32 for d = 64.
            let i8_limit = (i64::from(i32::MAX) / (127 * d as i64)).min(i64::from(MAX_SPLIT));
            let i16_limit = (i64::from(i32::MAX) / d as i64)
                .isqrt()
                .min(i64::from(MAX_SPLIT));
            for l in [1, 7, 8, 9, 16, 17, 24, 33, 300] {
                for rb in [0, 1, 31, 32, 33, 100] {
                    for wide in [false, true] {
                        let (row_lim, col_lim) = if wide {
                            (i16_limit, i16_limit)
                        } else {
                            (127, i8_limit)
                        };
                        let vals: Vec<i64> = (0..rb * d)
                            .map(|j| {
                                if j % 11 == 0 {
                                    -row_lim
                                } else {
                                    rng.within(row_lim)
                                }
                            })
                            .collect();
                        let cols: Vec<i16> = (0..l * d)
                            .map(|j| {
                                if j % 5 == 0 {
                                    col_lim as i16
                                } else {
                                    rng.within(col_lim) as i16
                                }
                            })
                            .collect();
                        let packed = AmxCols::new(&cols, l, d).expect("AMX packs these columns");
                        let (r8, r16): (Vec<i8>, Vec<i16>) = (
                            vals.iter().map(|&v| v as i8).collect(),
                            vals.iter().map(|&v| v as i16).collect(),
                        );
                        let rows = match wide {
                            true => (Rows::I16(&r16), row_lim),
                            false => (Rows::I8(&r8), 0),
                        };
                        let mut out = vec![SENTINEL; rb * l + 3];
                        assert!(gemm(rows, d, &packed, &mut out, &mut scratch));
                        let check = |out: &[i32], how: &str| {
                            let what = format!("{how}: d {d} L {l} rb {rb} i16 {wide}");
                            assert_exact_sums(out, (&vals, &cols), (rb, l, d), &what);
                        };
                        check(&out, "rows");
                        // The same rows kept tiled (i16 in two planes): all of them, and
                        // from rows 5, 16 and 48 on (a first row inside a quarter; tiles
                        // loaded in place from a group's second quarter, and across two
                        // groups).
                        let shape = Tiled {
                            d,
                            planes: 1 + usize::from(wide),
                        };
                        let kept = tiled(&vals, shape);
                        let t = (kept.as_slice(), shape);
                        let mut out = vec![SENTINEL; rb * l + 3];
                        assert!(gemm_tiled(t, 0..rb, &packed, &mut out, &mut scratch));
                        check(&out, "tiled");
                        for from in [5, 16, 48].into_iter().filter(|&f| f < rb) {
                            let mut part = vec![SENTINEL; rb * l + 3];
                            assert!(gemm_tiled(t, from..rb, &packed, &mut part, &mut scratch));
                            let want = &out[from * l..rb * l];
                            assert_eq!(part[..(rb - from) * l], *want, "from row {from}");
                        }
                    }
                }
            }
        }
    }

    /// Rows of `shape.d` values (int8 for one plane, i16 split for two) kept tiled, placed
    /// by a layout written out here rather than through [`Tiled::at`]: per group of 64 rows,
    /// plane, step of 64 values, quarter of 16 rows, row.
    fn tiled(vals: &[i64], shape: Tiled) -> Vec<i8> {
        let d = shape.d;
        let rows = vals.len() / d;
        let mut out = vec![0; shape.bytes(rows)];
        let mut at = 0;
        for g in 0..rows.div_ceil(GROUP) {
            for plane in 0..shape.planes {
                for s in 0..d / 64 {
                    for r in 64 * g..64 * g + 64 {
                        for j in 64 * s..64 * s + 64 {
                            let v = vals.get(r * d + j).map_or(0, |&v| v as i16);
                            out[at] = plane_byte(v, shape.planes, plane);
                            at += 1;
                        }
                    }
                }
            }
        }
        out
    }

    /// The byte of value `v` in plane `plane` of rows kept in `planes` planes: `v` itself for
    /// one (int8), its high or low half (`v = 256·hi + lo`) for two.
    fn plane_byte(v: i16, planes: usize, plane: usize) -> i8 {
        match (planes, plane) {
            (2, 0) => split(v).0,
            (2, _) => split(v).1,
            _ => v as i8,
        }
    }

    #[test]
    fn tiled_places_every_value_once() {
        for (d, planes) in [(64, 1), (128, 2), (768, 2)] {
            let shape = Tiled { d, planes };
            let rows = 130;
            let mut seen = vec![false; shape.bytes(rows)];
            let vals: Vec<i64> = (0..rows * d).map(|i| (i % 251) as i64 - 125).collect();
            let t = tiled(&vals, shape);
            for r in 0..rows {
                for p in 0..planes {
                    for j in 0..d {
                        let at = shape.at(r, p, j);
                        assert!(!std::mem::replace(&mut seen[at], true), "{r} {p} {j} twice");
                        let want = plane_byte(vals[r * d + j] as i16, planes, p);
                        assert_eq!(t[at], want, "row {r} plane {p} value {j}");
                    }
                }
            }
            // What is not a value is the last group's padding.
            let values = rows * planes * d;
            assert_eq!(seen.iter().filter(|&&s| s).count(), values);
            assert_eq!(shape.bytes(rows), 192 * planes * d);
        }
    }

    #[test]
    fn columns_the_tiles_cannot_take_are_refused() {
        assert!(
            AmxCols::new(&[1; 96], 1, 96).is_none(),
            "d not a multiple of 64"
        );
        assert!(
            AmxCols::new(&[i16::MAX; 64], 1, 64).is_none(),
            "past the split's range"
        );
        assert!(AmxCols::new(&[1; 64], 0, 64).is_none(), "no columns");
        assert!(
            AmxCols::new(&[1; 63], 1, 64).is_none(),
            "fewer values than l × d"
        );
        if let Some(packed) = AmxCols::new(&[1; 64], 1, 64) {
            let mut out = [0; 64];
            let rows = vec![1; 64 * 128];
            assert_eq!(
                dot_rows(&rows, 128, &packed, &mut out),
                0,
                "rows of another d"
            );
            assert_eq!(
                dot_rows(&rows, 64, &packed, &mut out[..63]),
                0,
                "out too short"
            );
            assert_eq!(dot_rows(&rows[..64 * 64], 64, &packed, &mut out), 64);
            assert!(out.iter().all(|&v| v == 64), "64 ones against 64 ones");
        }
        if let Some(packed) = AmxCols::new(&[1; 64], 1, 64) {
            let (mut out, mut scratch) = ([0; 2], GemmScratch::default());
            let rows = [1i16; 128];
            let past = (Rows::I16(&rows), i64::from(MAX_SPLIT) + 1);
            assert!(
                !gemm(past, 64, &packed, &mut out, &mut scratch),
                "rows past the split"
            );
            let short = (Rows::I16(&rows), 1);
            assert!(
                !gemm(short, 64, &packed, &mut out[..1], &mut scratch),
                "out too short"
            );
            assert!(gemm(short, 64, &packed, &mut out, &mut scratch));
            assert_eq!(out, [64, 64], "64 ones against 64 ones");
        }
        if let Some(packed) = AmxCols::new(&[1; 64], 1, 64) {
            let mut out = [0; 64];
            let two = Tiled { d: 64, planes: 2 };
            let planes = vec![1i8; two.bytes(64)];
            let other = Tiled { d: 128, planes: 1 };
            assert_eq!(
                dot_rows_tiled(&planes, other, &packed, &mut out),
                0,
                "another d"
            );
            let three = Tiled { d: 64, planes: 3 };
            let rows3 = vec![1i8; three.bytes(64)];
            assert_eq!(
                dot_rows_tiled(&rows3, three, &packed, &mut out),
                0,
                "three planes"
            );
            let part = &planes[..127 * 64];
            assert_eq!(
                dot_rows_tiled(part, two, &packed, &mut out),
                0,
                "not whole groups"
            );
            assert_eq!(
                dot_rows_tiled(&planes, two, &packed, &mut out[..63]),
                0,
                "out short"
            );
            let mut scratch = GemmScratch::default();
            let short = &mut out[..63];
            let t = (planes.as_slice(), two);
            assert!(
                !gemm_tiled(t, 0..64, &packed, short, &mut scratch),
                "out too short"
            );
            assert!(
                !gemm_tiled(t, 0..65, &packed, &mut out, &mut scratch),
                "rows past"
            );
            assert_eq!(dot_rows_tiled(&planes, two, &packed, &mut out), 64);
            // Rows of 257 (hi 1, lo 1) against 64 ones.
            assert!(out.iter().all(|&v| v == 257 * 64));
        }
        if let Some(nine) = AmxCols::new(&[1; 9 * 64], 9, 64) {
            let mut out = [0; 9 * 64];
            let rows = vec![1; 64 * 64];
            assert_eq!(
                dot_rows(&rows, 64, &nine, &mut out),
                0,
                "more than one tile"
            );
        }
    }
}
