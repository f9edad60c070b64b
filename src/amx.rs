//! Intel AMX tile kernels for a single query's int8 dots: the exact integer sums
//! `Σ_j q_kj·u_lj` of int8 index rows with a few i16 query columns, as
//! [`crate::int_kernels::dot_rows_i8_i16`] computes them, through `tdpbssd` (one instruction
//! multiplies a 16 × 64 int8 tile of rows by a 64 × 16 int8 tile of columns: 16 384
//! multiply-adds against 32 for a VNNI `vpdpwssd`).
//!
//! AMX multiplies int8 by int8, so each i16 column value is split exactly as
//! `u = 256·hi + lo` with `hi, lo` in int8 (`lo = u mod 256` in [−128, 127], which needs
//! `|u| ≤ 32 639` for `hi` to fit): one query column becomes two tile columns (up to 8 query
//! columns in the tile's 16), and `dot = 256·(q·hi) + q·lo` in wrapping i32 — the exact sum
//! modulo 2³², so bit-identical to the VNNI, AVX2 and portable kernels (the caller keeps the
//! true sum within i32, see `int_kernels`).
//!
//! Why: a row's dots with 5–8 columns through VNNI cost 43–60 ns a row on one core against a
//! ~50 ns read (BENCHMARKS.md, session 12), so long-segment int8 queries were bound by
//! instructions beside the read; through the tiles a row costs a few ns whatever the columns.
//!
//! Only on x86_64 Linux CPUs with AMX-TILE and AMX-INT8, once the kernel grants the process
//! the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`AmxCols::new`] says `None`
//! elsewhere, and callers keep the other kernels. `SEGINF_AMX=off` in the environment turns
//! the tiles off (for comparisons).

/// Query columns split and packed as the tiles' B operand, 64 features a step.
pub struct AmxCols {
    /// One block a step `s`: group `g` (features `64s + 4g .. 64s + 4g + 4`), tile column
    /// `n` (2l: `hi` of column l, 2l + 1: its `lo`), byte `t` at `64g + 4n + t`; zero past
    /// 2L columns.
    tiles: Vec<Block>,
    l: usize,
    d: usize,
}

/// 1024 bytes on a cache line's boundary: a tile of 16 rows of 64 bytes, read once a step
/// for 64 rows (from L1; loads that straddle lines took twice as long).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([i8; 1024]);

/// The most query columns: two tile columns each, 16 in a tile.
pub const MAX_COLUMNS: usize = 8;

/// The largest `|u|` whose `hi = (u − lo) / 256` fits in int8.
pub const MAX_SPLIT: i32 = 127 * 256 + 127;

impl AmxCols {
    /// Packs `cols` (`l` columns of `d`, row-major) when the tiles can run them: AMX is
    /// available, `1 ≤ l ≤` [`MAX_COLUMNS`], `d` is a positive multiple of 64 (whole steps:
    /// 768 and the other usual encoder widths) and every `|u| ≤ 32 639`. `None` otherwise
    /// (also when `cols.len() != l·d`).
    pub fn new(cols: &[i16], l: usize, d: usize) -> Option<AmxCols> {
        let fits = (1..=MAX_COLUMNS).contains(&l)
            && d > 0
            && d.is_multiple_of(64)
            && cols.len() == l * d
            && cols.iter().all(|&u| i32::from(u).abs() <= MAX_SPLIT);
        if !fits || !available() {
            return None;
        }
        let mut tiles = vec![Block([0; 1024]); d / 64];
        for (c, col) in cols.chunks_exact(d).enumerate() {
            for (j, &u) in col.iter().enumerate() {
                let (hi, lo) = split(u);
                let (block, at) = (&mut tiles[j / 64].0, 64 * (j % 64 / 4) + j % 4);
                block[at + 4 * (2 * c)] = hi;
                block[at + 4 * (2 * c + 1)] = lo;
            }
        }
        Some(AmxCols { tiles, l, d })
    }
}

/// `u = 256·hi + lo` with `lo` in [−128, 127] (`|u| ≤` [`MAX_SPLIT`]).
fn split(u: i16) -> (i8, i8) {
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
pub fn dot_rows(rows: &[i8], d: usize, cols: &AmxCols, out: &mut [i32]) -> usize {
    let rb = rows.len().checked_div(d).unwrap_or(0);
    if d != cols.d || rows.len() != rb * d || out.len() < rb * cols.l || !available() {
        return 0;
    }
    imp::dot_rows(rows, rb, cols, out)
}

/// Writes one 16-row tile of sums (16 × 16 i32, row-major) into `out` for its first `rows`
/// rows: `256·hi + lo` per query column.
fn combine(sums: &[i32; 256], rows: usize, l: usize, out: &mut [i32]) {
    for (o, s) in out
        .chunks_exact_mut(l)
        .zip(sums.chunks_exact(16))
        .take(rows)
    {
        for (c, o) in o.iter_mut().enumerate() {
            *o = s[2 * c].wrapping_mul(256).wrapping_add(s[2 * c + 1]);
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[allow(unsafe_code)]
mod imp {
    use std::arch::asm;
    use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};

    use super::{combine, AmxCols};

    /// `arch_prctl` codes (linux/arch/x86/include/uapi/asm/prctl.h) and the tile data's
    /// XSAVE feature number.
    const ARCH_REQ_XCOMP_PERM: libc::c_int = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_ulong = 18;

    /// CPUID.7.0:EDX bits 24 (AMX-TILE) and 25 (AMX-INT8); the OS saves the tile state
    /// (XCR0 bits 17 and 18, read once CPUID.1:ECX.OSXSAVE says XGETBV is there); Linux
    /// grants it to the process.
    pub fn request_tiles() -> bool {
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

    /// Every tile 16 rows of 64 bytes: 0, 1, 6, 7 the sums of a group's four 16-row
    /// quarters, 2 a step's columns, 3, 4, 5 the quarters' rows in turn.
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

    /// Four tiles of sums (16 × 16 i32 each), stored on cache lines.
    #[repr(C, align(64))]
    struct Sums([[i32; 256]; 4]);

    /// How far ahead of the group being multiplied the kernel asks for rows (into L2).
    const AHEAD: usize = 96 << 10;

    /// The body of [`super::dot_rows`] (shapes checked there): the leading groups of 64 rows,
    /// returning how many rows that was.
    pub fn dot_rows(rows: &[i8], rb: usize, cols: &AmxCols, out: &mut [i32]) -> usize {
        let (d, l) = (cols.d, cols.l);
        let groups = rb / super::GROUP;
        let cfg = config();
        let mut sums = Sums([[0; 256]; 4]);
        // SAFETY: AMX was granted (the caller checked `available`); every tile is 16 rows
        // of 64 bytes as configured; a group's row loads read 64 rows of d bytes (d a
        // multiple of 64) from `rows[64g·d..]`, within `rows` for g < rb / 64; the column
        // loads read one `Block` a step (d / 64 of them); the stores write 16 rows of 64
        // bytes into `sums`.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) &cfg, options(nostack, readonly));
            for g in 0..groups {
                group(rows.as_ptr().add(64 * g * d), d, cols, &mut sums.0);
                for (q, sums) in sums.0.iter().enumerate() {
                    combine(sums, 16, l, &mut out[(64 * g + 16 * q) * l..]);
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
        64 * groups
    }

    /// 16 lines from `p` into L2 (where the rows to come lie: the prefetches never fault).
    #[inline(always)]
    fn ask(p: *const i8) {
        for line in 0..16 {
            crate::int_kernels::x86::prefetch_l2(p.wrapping_add(64 * line).cast());
        }
    }

    /// 64 rows from `p` (stride `d`, a multiple of 64) against every step's columns, the
    /// four quarters' sums stored into `sums`. Each step asks for the 4 KB of rows `AHEAD`
    /// bytes on (a group reads 64·d bytes in d / 64 steps), 16 lines beside each tile load:
    /// the tile loads read 16 rows 768 bytes apart, which the hardware prefetchers do not
    /// follow (from memory: ~120 ns a row without asking, 31–37 with, a plain read 31 on one
    /// core; BENCHMARKS.md session 12).
    ///
    /// # Safety
    /// As [`dot_rows`]: tiles configured by [`config`], 64 rows of `d` from `p`.
    #[inline(always)]
    unsafe fn group(p: *const i8, d: usize, cols: &AmxCols, sums: &mut [[i32; 256]; 4]) {
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
                let ahead = p.wrapping_add(AHEAD + 4096 * s);
                let row = |quarter: usize| p.add(16 * quarter * d + 64 * s);
                asm!(
                    "tileloadd tmm2, [{b} + {sixty_four}*1]",
                    b = in(reg) b.add(1024 * s),
                    sixty_four = in(reg) 64usize,
                    options(nostack, readonly),
                );
                ask(ahead);
                asm!(
                    "tileloadd tmm3, [{a} + {d}*1]",
                    "tdpbssd tmm0, tmm3, tmm2",
                    a = in(reg) row(0),
                    d = in(reg) d,
                    options(nostack, readonly),
                );
                ask(ahead.wrapping_add(1024));
                asm!(
                    "tileloadd tmm4, [{a} + {d}*1]",
                    "tdpbssd tmm1, tmm4, tmm2",
                    a = in(reg) row(1),
                    d = in(reg) d,
                    options(nostack, readonly),
                );
                ask(ahead.wrapping_add(2048));
                asm!(
                    "tileloadd tmm5, [{a} + {d}*1]",
                    "tdpbssd tmm6, tmm5, tmm2",
                    a = in(reg) row(2),
                    d = in(reg) d,
                    options(nostack, readonly),
                );
                ask(ahead.wrapping_add(3072));
                asm!(
                    "tileloadd tmm3, [{a} + {d}*1]",
                    "tdpbssd tmm7, tmm3, tmm2",
                    a = in(reg) row(3),
                    d = in(reg) d,
                    options(nostack, readonly),
                );
            }
            asm!(
                "tilestored [{s0} + {sixty_four}*1], tmm0",
                "tilestored [{s1} + {sixty_four}*1], tmm1",
                "tilestored [{s2} + {sixty_four}*1], tmm6",
                "tilestored [{s3} + {sixty_four}*1], tmm7",
                s0 = in(reg) sums[0].as_mut_ptr(),
                s1 = in(reg) sums[1].as_mut_ptr(),
                s2 = in(reg) sums[2].as_mut_ptr(),
                s3 = in(reg) sums[3].as_mut_ptr(),
                sixty_four = in(reg) 64usize,
                options(nostack),
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use super::AmxCols;

    pub fn request_tiles() -> bool {
        false
    }

    pub fn dot_rows(_: &[i8], _: usize, _: &AmxCols, _: &mut [i32]) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit LCG.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        /// Uniform in [-m, m].
        fn within(&mut self, m: i64) -> i64 {
            (self.next() % (2 * m as u64 + 1)) as i64 - m
        }
    }

    #[test]
    fn split_is_exact_over_the_whole_range() {
        for u in -(MAX_SPLIT + 1)..=MAX_SPLIT {
            let (hi, lo) = split(u as i16);
            assert_eq!(256 * i32::from(hi) + i32::from(lo), u, "u = {u}");
        }
    }

    /// Every row and column count the kernel splits differently (pairs of 16-row groups, one
    /// group, a zero-padded last group; full steps and a tail step), against the exact sums in
    /// i64, with the extreme values in: equal wherever the sum fits in i32, which these do.
    #[test]
    fn tile_dots_are_the_exact_integer_sums() {
        if !available() {
            eprintln!("no AMX here: nothing to compare (the other kernels serve)");
            return;
        }
        let mut rng = Rng(11);
        for d in [64, 128, 768, 832] {
            // The columns' limit as the ranking pass quantises against int8 rows of d, and
            // never above what splits.
            let limit = (i64::from(i32::MAX) / (127 * d as i64)).min(i64::from(MAX_SPLIT));
            for l in 1..=MAX_COLUMNS {
                for rb in [0, 1, 63, 64, 65, 127, 128, 200] {
                    let rows: Vec<i8> = (0..rb * d)
                        .map(|j| match j % 7 {
                            0 => -127,
                            1 => 127,
                            _ => rng.within(127) as i8,
                        })
                        .collect();
                    let cols: Vec<i16> = (0..l * d)
                        .map(|j| match j % 5 {
                            0 => limit as i16,
                            1 => -limit as i16,
                            _ => rng.within(limit) as i16,
                        })
                        .collect();
                    let packed = AmxCols::new(&cols, l, d).expect("AMX packs these columns");
                    let mut out = vec![0x5eed_5eed; rb * l + 3];
                    let done = dot_rows(&rows, d, &packed, &mut out);
                    assert_eq!(done, rb / GROUP * GROUP, "the whole groups");
                    for i in 0..done {
                        for c in 0..l {
                            let exact: i64 = (0..d)
                                .map(|j| i64::from(rows[i * d + j]) * i64::from(cols[c * d + j]))
                                .sum();
                            assert_eq!(
                                i64::from(out[i * l + c]),
                                exact,
                                "d {d} L {l} rb {rb} row {i} col {c}"
                            );
                        }
                    }
                    assert!(
                        out[done * l..].iter().all(|&v| v == 0x5eed_5eed),
                        "wrote past the groups' rows"
                    );
                }
            }
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
        assert!(
            AmxCols::new(&[1; 9 * 64], 9, 64).is_none(),
            "more than 8 columns"
        );
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
    }
}
