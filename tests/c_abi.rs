//! The C ABI, tested from C and C++ (DESIGN.md §4, STYLE.md "Tests").
//!
//! - `include/seginf.h` is what cbindgen makes today, and compiles alone as C99 and C++17 with
//!   `-Wall -Wextra -Werror -pedantic`, and when included twice.
//! - `SEGINF_VERSION_*` and `seginf_version()` match Cargo.toml.
//! - Every program in `examples-c/` is built against the shared library and run under
//!   AddressSanitizer + UBSan (LeakSanitizer included where it can run); what the programs print
//!   is recomputed here through the Rust API and compared value by value: the CRF
//!   (`crf_basic.c`, `crf_raii.cpp`) and the index and queries (`index_query.c`,
//!   `index_query.cpp`, the latter with F16 storage).
//!   Training, the fitted Hessian modes and exact influence (`train_influence.c`) are checked the
//!   same way: the objective and iteration counts exactly, the derived values to 1e-9.
//! - `examples-c/java/`: a JNI binding (`SegInf.java` + `seginf_jni.c`, which uses only the
//!   header) and `IndexQuery.java`, built with the JDK on the PATH and run under
//!   `-Xcheck:jni`; what it prints (hits, scores, the errors that reach Java) is recomputed
//!   here as for the C programs. Its 64-feature queries run the AMX tiles inside the JVM
//!   where the CPU has them; run again with `SEGINF_AMX=off` it prints the same.
//! - `null_args.c`, `index_null_args.c` and `train_null_args.c` feed every entry point bad input
//!   and check the exact status, the message and that outputs stay untouched; between them they
//!   call every exported function.
//!
//! Cargo does not tell tests where the cdylib is, so the library is built once per run of this
//! binary by a nested `cargo build --lib` into a target directory of its own
//! (`<target>/ffi-tests`): the outer `cargo test` holds the lock on the usual one.
//! Needs `cc` and `c++` (gcc or clang; `CC`/`CXX` override them) and a JDK (`javac`, JNI
//! headers).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use std::collections::HashSet;
use std::sync::Arc;

use ndarray::{Array2, ArrayView2};
use seginf::index::TrainingSequence;
use seginf::train::TrainSeq;
use seginf::{
    BuildOptions, ConstraintMask, Crf, Error, Granularity, Hessian, Index, IndexBuilder,
    LoadOptions, Normalization, Query, Storage, TagScheme, TestSegment, TopHits,
};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Sanitizers for every program compiled here; a first error aborts the run.
const SANITIZE: &[&str] = &[
    "-fsanitize=address,undefined",
    "-fno-omit-frame-pointer",
    "-fno-sanitize-recover=all",
    "-g",
];

/// Values printed with %.17g read back exactly, and the C programs run the same code as this
/// test, so agreement is expected to the last bit. The tolerance only absorbs a different
/// summation order (another BLAS build) in values that cancel to nearly zero.
const REL_TOL: f64 = 1e-12;
const ABS_FLOOR: f64 = 1e-15;

// ---- building and running C/C++ programs ------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Lang {
    C,
    Cxx,
}

impl Lang {
    fn of(path: &Path) -> Option<Lang> {
        match path.extension()?.to_str()? {
            "c" => Some(Lang::C),
            "cpp" | "cc" | "cxx" => Some(Lang::Cxx),
            _ => None,
        }
    }

    fn compiler(self) -> String {
        let (var, default) = match self {
            Lang::C => ("CC", "cc"),
            Lang::Cxx => ("CXX", "c++"),
        };
        std::env::var(var).unwrap_or_else(|_| default.to_string())
    }

    fn std_flag(self) -> &'static str {
        match self {
            Lang::C => "-std=c99",
            Lang::Cxx => "-std=c++17",
        }
    }
}

fn strict_flags(lang: Lang) -> [&'static str; 5] {
    [lang.std_flag(), "-Wall", "-Wextra", "-Werror", "-pedantic"]
}

/// Runs a command to completion; panics with its full output when it fails or cannot start.
fn run_checked(cmd: &mut Command, what: &str) {
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{what}: cannot run {:?}: not found. The C ABI tests need a C and a C++ compiler \
             (e.g. `apt-get install gcc g++`; set CC/CXX to use others).",
            cmd.get_program()
        ),
        Err(e) => panic!("{what}: cannot run {cmd:?}: {e}"),
    };
    assert!(
        output.status.success(),
        "{what} failed ({}): {cmd:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A fresh scratch directory for one test, under cargo's per-test-target tmp dir.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c_abi")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Builds the shared library (once per test binary) and returns the directory holding it.
fn library_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // `<target>/tmp` is CARGO_TARGET_TMPDIR, so this honours a custom CARGO_TARGET_DIR.
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("CARGO_TARGET_TMPDIR has a parent")
            .join("ffi-tests");
        let release = !cfg!(debug_assertions);
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(MANIFEST_DIR)
            .args(["build", "--lib", "--target-dir"])
            .arg(&target)
            // The nested build regenerates the header; it must not rewrite the committed one.
            .env_remove("SEGINF_UPDATE_HEADER");
        if release {
            cmd.arg("--release");
        }
        run_checked(&mut cmd, "nested `cargo build --lib`");
        let dir = target.join(if release { "release" } else { "debug" });
        assert!(
            dir.join("libseginf.so").exists() || dir.join("libseginf.dylib").exists(),
            "no shared library in {}",
            dir.display()
        );
        dir
    })
}

/// Whether LeakSanitizer works here (it cannot under ptrace, e.g. in some sandboxes): a program
/// that leaks must be reported. Otherwise the programs run with leak detection off, and a note
/// says so.
fn leak_detection_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        let dir = scratch_dir("lsan_probe");
        let src = dir.join("leak.c");
        fs::write(
            &src,
            "#include <stdlib.h>\nvoid *volatile keep;\n\
             int main(void) { keep = malloc(32); keep = 0; return 0; }\n",
        )
        .unwrap();
        let exe = dir.join("leak");
        run_checked(
            Command::new(Lang::C.compiler())
                .args(SANITIZE)
                .arg(&src)
                .arg("-o")
                .arg(&exe),
            "compiling the LeakSanitizer probe",
        );
        let out = Command::new(&exe)
            .env("ASAN_OPTIONS", "detect_leaks=1")
            .output()
            .expect("run the LeakSanitizer probe");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let works = !out.status.success() && stderr.contains("detected memory leaks");
        if !works {
            eprintln!(
                "note: LeakSanitizer cannot run here, so leaks are not checked \
                 (ASan and UBSan still are). Probe said:\n{stderr}"
            );
        }
        works
    })
}

/// Compiles `source` against the library with the strict warnings and the sanitizers.
fn compile(source: &Path, dir: &Path) -> PathBuf {
    let lang = Lang::of(source).unwrap_or_else(|| panic!("not C or C++: {}", source.display()));
    let lib = library_dir();
    let exe = dir.join(source.file_stem().unwrap());
    run_checked(
        Command::new(lang.compiler())
            .args(strict_flags(lang))
            .args(SANITIZE)
            .arg("-I")
            .arg(Path::new(MANIFEST_DIR).join("include"))
            .arg(source)
            .arg("-o")
            .arg(&exe)
            .arg(format!("-L{}", lib.display()))
            .arg("-lseginf")
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-lm"),
        &format!("compiling {}", source.display()),
    );
    exe
}

/// What a program did: its exit status and output.
struct Ran {
    what: String,
    /// The program's scratch directory (its working directory and first argument).
    dir: PathBuf,
    success: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn new(what: String, dir: PathBuf, output: std::process::Output) -> Ran {
        Ran {
            what,
            dir,
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics when stderr holds any of `markers` (a checker's report), whatever the exit status.
    fn expect_no_report(&self, name: &str, report: &str, markers: &[&str]) {
        assert!(
            !markers.iter().any(|m| self.stderr.contains(m)),
            "{name}: {report}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// stdout, after checking that the program exited 0.
    fn expect_success(self) -> String {
        assert!(
            self.success,
            "{} failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.stdout, self.stderr
        );
        self.stdout
    }
}

/// Compiles and runs one program (argument: its scratch directory) under the sanitizers.
/// A sanitizer report fails the test here, whatever the exit status.
fn build_and_run(source: &Path, name: &str) -> Ran {
    let dir = scratch_dir(name);
    let exe = compile(source, &dir);
    let leaks = if leak_detection_works() { 1 } else { 0 };
    let output = Command::new(&exe)
        .arg(&dir)
        .current_dir(&dir)
        // Only the library just built: `cargo test` also points LD_LIBRARY_PATH at
        // `target/<profile>`, where an older `cargo build` may have left a stale libseginf.so,
        // and the loader searches that variable before the programs' run path.
        .env("LD_LIBRARY_PATH", library_dir())
        .env(
            "ASAN_OPTIONS",
            format!("detect_leaks={leaks}:halt_on_error=1:strict_string_checks=1"),
        )
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let ran = Ran::new(format!("running {}", exe.display()), dir, output);
    ran.expect_no_report(name, "sanitizer report", &["Sanitizer", "runtime error"]);
    ran
}

fn example(file: &str) -> PathBuf {
    Path::new(MANIFEST_DIR).join("examples-c").join(file)
}

// ---- reading what the programs print -----------------------------------------------------

/// Lines of `key value value ...`; every line must be checked by someone (`finish`).
struct Printed {
    lines: Vec<(String, String)>,
    checked: Vec<bool>,
}

impl Printed {
    fn parse(stdout: &str) -> Printed {
        let lines: Vec<(String, String)> = stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match l.split_once(' ') {
                Some((k, rest)) => (k.to_string(), rest.to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        let checked = vec![false; lines.len()];
        Printed { lines, checked }
    }

    /// The text after `key` on its (only) line.
    fn rest(&mut self, key: &str) -> String {
        let found: Vec<usize> = (0..self.lines.len())
            .filter(|&i| self.lines[i].0 == key)
            .collect();
        assert_eq!(found.len(), 1, "want exactly one line `{key} ...`");
        self.checked[found[0]] = true;
        self.lines[found[0]].1.clone()
    }

    fn words(&mut self, key: &str) -> Vec<String> {
        self.rest(key)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    fn f64s(&mut self, key: &str) -> Vec<f64> {
        self.words(key)
            .iter()
            .map(|w| {
                w.parse()
                    .unwrap_or_else(|_| panic!("{key}: {w:?} is not a number"))
            })
            .collect()
    }

    fn integers(&mut self, key: &str) -> Vec<u64> {
        self.words(key)
            .iter()
            .map(|w| {
                w.parse()
                    .unwrap_or_else(|_| panic!("{key}: {w:?} is not an integer"))
            })
            .collect()
    }

    fn expect_close(&mut self, key: &str, want: &[f64]) {
        assert_close(key, &self.f64s(key), want);
    }

    fn expect_close_within(&mut self, key: &str, want: &[f64], rel: f64) {
        assert_close_within(key, &self.f64s(key), want, rel);
    }

    fn expect_integers(&mut self, key: &str, want: &[u64]) {
        assert_eq!(self.integers(key), want, "{key}");
    }

    /// An error line `key STATUS_NAME message` from a C++ exception.
    fn expect_error(&mut self, key: &str, status: &str, message: &str) {
        assert_eq!(self.rest(key), format!("{status} {message}"), "{key}");
    }

    fn finish(self) {
        let unchecked: Vec<&str> = self
            .lines
            .iter()
            .zip(&self.checked)
            .filter(|(_, &c)| !c)
            .map(|((k, _), _)| k.as_str())
            .collect();
        assert!(unchecked.is_empty(), "lines nobody checked: {unchecked:?}");
    }
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_close_within(what, got, want, REL_TOL);
}

/// As [`assert_close`], to a relative tolerance `rel` of the larger magnitude.
fn assert_close_within(what: &str, got: &[f64], want: &[f64], rel: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, want {}",
        got.len(),
        want.len()
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let close = g == w || (g - w).abs() <= rel * g.abs().max(w.abs()).max(ABS_FLOOR);
        assert!(close, "{what}[{i}]: C printed {g:e}, Rust computes {w:e}");
    }
}

fn ints(values: &[u32]) -> Vec<u64> {
    values.iter().map(|&v| u64::from(v)).collect()
}

fn flags(n: usize, allowed: impl Fn(usize) -> bool) -> Vec<u64> {
    (0..n).map(|i| u64::from(allowed(i))).collect()
}

/// The status the C ABI reports for a core error (the mapping the header documents).
fn status_name(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument(_) => "SEGINF_ERR_INVALID_ARGUMENT",
        Error::DimensionMismatch(_) => "SEGINF_ERR_DIMENSION_MISMATCH",
        Error::LabelOutOfRange(_) => "SEGINF_ERR_LABEL_OUT_OF_RANGE",
        Error::BadSegment(_) => "SEGINF_ERR_BAD_SEGMENT",
        Error::NonFinite(_) => "SEGINF_ERR_NON_FINITE",
        Error::ImpossibleLabels(_) => "SEGINF_ERR_IMPOSSIBLE_LABELS",
        Error::Io(_) => "SEGINF_ERR_IO",
        Error::Format(_) => "SEGINF_ERR_FORMAT",
        Error::ModelMismatch(_) => "SEGINF_ERR_MODEL_MISMATCH",
        Error::Unsupported(_) => "SEGINF_ERR_UNSUPPORTED",
        Error::Cancelled(_) => "SEGINF_ERR_CANCELLED",
        Error::NotConverged(_) => "SEGINF_ERR_NOT_CONVERGED",
    }
}

/// `k / denominator` as the C programs compute it: `(float)(int)k / denominator`.
fn dyadic(k: usize, offset: i32, denominator: f32) -> f32 {
    (k as i32 - offset) as f32 / denominator
}

// ---- the header ----------------------------------------------------------------------------

#[test]
fn header_matches_cbindgen() {
    let committed_path = Path::new(MANIFEST_DIR).join("include/seginf.h");
    let committed = fs::read_to_string(&committed_path).expect("read include/seginf.h");
    let generated = fs::read_to_string(env!("SEGINF_GENERATED_HEADER"))
        .expect("read the header build.rs generated");
    if committed != generated {
        let (line, (ours, theirs)) = committed
            .lines()
            .chain(std::iter::repeat("<end of file>"))
            .zip(generated.lines().chain(std::iter::repeat("<end of file>")))
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .unwrap_or((0, ("", "")));
        panic!(
            "include/seginf.h is stale: it differs from what cbindgen generates from src/ffi/ \
             ({}). Run `SEGINF_UPDATE_HEADER=1 cargo build` and commit the result.\n\
             First difference, line {}:\n  committed: {ours}\n  generated: {theirs}",
            env!("SEGINF_GENERATED_HEADER"),
            line + 1
        );
    }
}

/// Compiles a translation unit made of `body` with the strict flags, syntax only.
fn check_header_compiles(lang: Lang, name: &str, body: &str) {
    let dir = scratch_dir(name);
    let src = dir.join(match lang {
        Lang::C => "tu.c",
        Lang::Cxx => "tu.cpp",
    });
    fs::write(&src, body).unwrap();
    run_checked(
        Command::new(lang.compiler())
            .args(strict_flags(lang))
            .arg("-fsyntax-only")
            .arg("-I")
            .arg(Path::new(MANIFEST_DIR).join("include"))
            .arg(&src),
        &format!(
            "{name}: compiling include/seginf.h ({lang:?}, {})",
            lang.std_flag()
        ),
    );
}

/// The names a cbindgen header declares at file scope, read from its text (cbindgen's layout:
/// declarations start in column 0; enumerators and fields are indented; an anonymous struct is
/// named on its closing `} name;` line).
#[derive(Debug, Default)]
struct Declarations {
    functions: Vec<String>,
    /// Types, typedefs and enumerators.
    others: Vec<String>,
}

fn header_declarations(header: &str) -> Declarations {
    let mut found = Declarations::default();
    let mut in_enum = false;
    let ident = |s: &str| -> String {
        s.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .to_string()
    };
    for line in header.lines() {
        let code = line.split("//").next().unwrap_or("").trim_end();
        let first = code.split_whitespace().next().unwrap_or("");
        if in_enum {
            if code.starts_with('}') {
                in_enum = false;
            } else if first.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                found.others.push(ident(first.split('=').next().unwrap()));
            }
        } else if code.starts_with(' ') || code.starts_with('#') || code.starts_with('*') {
            // Parameters, preprocessor lines (macros are checked by the preprocessor), comments.
        } else if let Some(rest) = code.strip_prefix("enum ") {
            in_enum = true;
            found.others.push(ident(rest));
        } else if let Some(name) = code.strip_prefix('}') {
            // The end of `typedef struct { ... } name;` (or of `extern "C" {`).
            found
                .others
                .extend(Some(ident(name)).filter(|n| !n.is_empty()));
        } else if code.starts_with("typedef") && code.ends_with('{') {
            // Named at its closing brace.
        } else if code.starts_with("typedef") {
            // `typedef struct x x;`, or a function pointer `typedef r (*x)(...);`.
            let name = match code.split_once("(*") {
                Some((_, rest)) => rest.split(')').next().unwrap_or(""),
                None => code.rsplit(' ').next().unwrap_or(""),
            };
            found.others.push(ident(name));
        } else if let Some((head, _)) = code.split_once('(') {
            let name = head.split_whitespace().last().unwrap_or("");
            found.functions.push(ident(name));
        }
    }
    found
}

/// `#define`s that `header` adds beyond what its own `#include`s bring, by the preprocessor.
fn header_macros(header: &Path, scratch: &Path) -> Vec<String> {
    let defines = |body: &str, file: &str| -> std::collections::BTreeSet<String> {
        let src = scratch.join(file);
        fs::write(&src, body).unwrap();
        let out = Command::new(Lang::C.compiler())
            .args(["-std=c99", "-dM", "-E", "-I"])
            .arg(header.parent().unwrap())
            .arg(&src)
            .output()
            .expect("run the C preprocessor");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("#define "))
            .map(|l| l.split([' ', '(']).next().unwrap().to_string())
            .collect()
    };
    let base = defines("#include <stddef.h>\n#include <stdint.h>\n", "base.c");
    let with = defines("#include \"seginf.h\"\n", "with_header.c");
    with.difference(&base).cloned().collect()
}

/// DESIGN.md §4: one prefix (`seginf_`/`SEGINF_`) for every symbol of the C API. Checked on the
/// committed header and on the one cbindgen makes now (a `pub const` anywhere in the crate
/// lands in the latter).
#[test]
fn header_declares_only_prefixed_names() {
    let scratch = scratch_dir("header_names");
    for header in [
        Path::new(MANIFEST_DIR).join("include/seginf.h"),
        PathBuf::from(env!("SEGINF_GENERATED_HEADER")),
    ] {
        let text = fs::read_to_string(&header).unwrap();
        let declared = header_declarations(&text);
        let has = |names: &[String], name: &str| names.iter().any(|n| n == name);
        assert!(
            declared.functions.len() >= 20
                && has(&declared.functions, "seginf_crf_new")
                && has(&declared.others, "seginf_crf")
                && has(&declared.others, "SEGINF_ERR_PANIC"),
            "could not read the declarations of {}: {declared:?}",
            header.display()
        );
        let unprefixed: Vec<String> = declared
            .functions
            .into_iter()
            .chain(declared.others)
            .chain(header_macros(&header, &scratch))
            .filter(|n| !n.starts_with("seginf_") && !n.starts_with("SEGINF_"))
            .collect();
        assert!(
            unprefixed.is_empty(),
            "{} declares names without the seginf_/SEGINF_ prefix: {unprefixed:?}",
            header.display()
        );
    }
}

#[test]
fn header_compiles_alone_as_c99() {
    check_header_compiles(Lang::C, "header_c99", "#include \"seginf.h\"\n");
}

#[test]
fn header_compiles_alone_as_cxx17() {
    check_header_compiles(Lang::Cxx, "header_cxx17", "#include \"seginf.h\"\n");
}

#[test]
fn header_compiles_when_included_twice() {
    let twice = "#include \"seginf.h\"\n#include \"seginf.h\"\n";
    check_header_compiles(Lang::C, "header_twice_c99", twice);
    check_header_compiles(Lang::Cxx, "header_twice_cxx17", twice);
}

#[test]
fn version_macros_and_seginf_version_match_cargo_toml() {
    let dir = scratch_dir("version");
    let src = dir.join("version.c");
    fs::write(
        &src,
        "#include \"seginf.h\"\n#include <stdio.h>\n\
         int main(void) {\n\
         \x20   printf(\"%d %d %d %s\\n\", SEGINF_VERSION_MAJOR, SEGINF_VERSION_MINOR,\n\
         \x20          SEGINF_VERSION_PATCH, seginf_version());\n\
         \x20   return 0;\n}\n",
    )
    .unwrap();
    let stdout = build_and_run(&src, "version_run").expect_success();
    let want = format!(
        "{} {} {} {}",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(stdout.trim(), want, "header macros / seginf_version()");
    assert_eq!(seginf::VERSION, env!("CARGO_PKG_VERSION"));
}

// ---- examples-c/crf_basic.c ------------------------------------------------------------------

/// The model and sequence of crf_basic.c, by its formulas.
fn crf_basic_model() -> (Crf, Array2<f32>, Vec<u32>) {
    const C: usize = 4;
    const D: usize = 5;
    const N: usize = 6;
    let mut weights = vec![0f32; C * D];
    let mut transitions = vec![0f32; C * C];
    let (mut bias, mut start, mut end) = (vec![0f32; C], vec![0f32; C], vec![0f32; C]);
    for i in 0..C {
        for j in 0..D {
            weights[i * D + j] = dyadic((i * 7 + j * 5 + 3) % 13, 6, 8.0);
        }
        for j in 0..C {
            transitions[i * C + j] = dyadic((i * 3 + j * 5) % 7, 3, 8.0);
        }
        bias[i] = dyadic(i % 3, 1, 4.0);
        start[i] = dyadic(2 * i, 3, 8.0);
        end[i] = dyadic((3 * i) % 5, 2, 8.0);
    }
    transitions[2] = f32::NEG_INFINITY; // O -> I-PER
    let features = Array2::from_shape_fn((N, D), |(t, k)| dyadic((t * 5 + k * 2 + 1) % 9, 4, 4.0));
    let crf = Crf::from_f32(
        C,
        D,
        &weights,
        Some(&bias),
        &transitions,
        Some(&start),
        Some(&end),
    )
    .unwrap();
    (crf, features, vec![1, 2, 0, 3, 0, 0])
}

fn offsets(crf: &Crf) -> Vec<u64> {
    let l = crf.layout();
    [Some(l.weights), l.bias, Some(l.transitions), l.start, l.end]
        .iter()
        .map(|o| o.map_or(u64::MAX, |v| v as u64))
        .collect()
}

#[test]
fn crf_basic_prints_what_rust_computes() {
    let stdout = build_and_run(&example("crf_basic.c"), "crf_basic").expect_success();
    let mut p = Printed::parse(&stdout);
    let (crf, features, gold) = crf_basic_model();
    let x: ArrayView2<f32> = features.view();
    let (c, n) = (crf.num_labels(), gold.len());

    assert_eq!(p.rest("version"), seginf::VERSION);
    p.expect_integers(
        "dims",
        &[c as u64, crf.feature_dim() as u64, crf.num_params() as u64],
    );
    p.expect_integers("param_offsets", &offsets(&crf));
    // The parameters first: if these differ, the formulas above drifted from the C program.
    p.expect_close("params", &crf.params());

    let (path, score) = crf.viterbi(x).unwrap();
    p.expect_integers("viterbi_path", &ints(&path));
    p.expect_close("viterbi_score", &[score]);
    p.expect_close("log_likelihood", &[crf.log_likelihood(x, &gold).unwrap()]);
    p.expect_close("log_partition", &[crf.log_partition(x).unwrap()]);
    let marginals = crf.marginals(x).unwrap();
    for t in 0..n {
        p.expect_close(&format!("marginals_{t}"), &marginals.unary.row(t).to_vec());
    }

    let (a, b) = (1, 2);
    p.expect_close("segment_loss", &[crf.segment_loss(x, &gold, a, b).unwrap()]);
    let q = crf.segment_marginals(x, &gold, a, b).unwrap();
    p.expect_close(
        "segment_marginals",
        &q.unary.iter().copied().collect::<Vec<_>>(),
    );
    let g = crf.segment_gradient(x, &gold, a, b).unwrap();
    p.expect_close(
        "segment_error_vectors",
        &g.error_vectors.iter().copied().collect::<Vec<_>>(),
    );
    p.expect_close(
        "segment_gradient",
        &crf.segment_gradient_dense(x, &gold, a, b).unwrap(),
    );

    let mask =
        ConstraintMask::from_labels(TagScheme::Bio, &["O", "B-PER", "I-PER", "B-LOC"]).unwrap();
    p.expect_integers(
        "mask_transitions",
        &flags(c * c, |k| mask.transition_allowed(k / c, k % c)),
    );
    p.expect_integers("mask_start", &flags(c, |j| mask.start_allowed(j)));
    p.expect_integers("mask_end", &flags(c, |j| mask.end_allowed(j)));

    let constrained = crf.with_constraints(&mask).unwrap();
    p.expect_integers("constrained_num_params", &[constrained.num_params() as u64]);
    let (path, score) = constrained.viterbi(x).unwrap();
    p.expect_integers("constrained_viterbi_path", &ints(&path));
    p.expect_close("constrained_viterbi_score", &[score]);
    p.expect_close(
        "constrained_log_likelihood",
        &[constrained.log_likelihood(x, &gold).unwrap()],
    );
    p.expect_close(
        "constrained_log_partition",
        &[constrained.log_partition(x).unwrap()],
    );
    p.expect_close(
        "constrained_segment_loss",
        &[constrained.segment_loss(x, &gold, a, b).unwrap()],
    );
    p.finish();
}

// ---- examples-c/crf_raii.cpp -----------------------------------------------------------------

const RAII_LABELS: [&str; 5] = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"];

/// The unconstrained model (no bias, no end scores) and sequence of crf_raii.cpp.
fn crf_raii_model() -> (Crf, Array2<f32>, Vec<u32>) {
    const C: usize = 5;
    const D: usize = 3;
    const N: usize = 7;
    let weights: Vec<f32> = (0..C * D)
        .map(|i| dyadic(((i / D) * 5 + (i % D) * 7 + 2) % 11, 5, 16.0))
        .collect();
    let transitions: Vec<f32> = (0..C * C)
        .map(|i| dyadic(((i / C) * 7 + (i % C) * 3 + 1) % 9, 4, 8.0))
        .collect();
    let start: Vec<f32> = (0..C).map(|j| dyadic(j % 4, 1, 8.0)).collect();
    let features = Array2::from_shape_fn((N, D), |(t, k)| dyadic((t * 7 + k * 4 + 3) % 11, 5, 8.0));
    let crf = Crf::from_f32(C, D, &weights, None, &transitions, Some(&start), None).unwrap();
    (crf, features, vec![0, 1, 2, 2, 0, 3, 4])
}

#[test]
fn crf_raii_prints_what_rust_computes() {
    let ran = build_and_run(&example("crf_raii.cpp"), "crf_raii");
    let scratch = ran.dir.clone();
    let stdout = ran.expect_success();
    let mut p = Printed::parse(&stdout);
    let (plain, features, gold) = crf_raii_model();
    let x = features.view();
    let n = gold.len();
    let mask = ConstraintMask::from_labels(TagScheme::Bio, &RAII_LABELS).unwrap();
    let crf = plain.with_constraints(&mask).unwrap();

    p.expect_integers("num_params", &[plain.num_params() as u64]);
    p.expect_integers("constrained_num_params", &[crf.num_params() as u64]);
    p.expect_close("constrained_params", &crf.params());
    let (path, score) = crf.viterbi(x).unwrap();
    p.expect_integers("viterbi_path", &ints(&path));
    p.expect_close("viterbi_score", &[score]);
    p.expect_close("log_likelihood", &[crf.log_likelihood(x, &gold).unwrap()]);
    let m = crf.marginals(x).unwrap();
    for t in 0..n {
        p.expect_close(&format!("marginals_{t}"), &m.unary.row(t).to_vec());
    }
    for t in 1..n {
        let pair = m.pairwise.index_axis(ndarray::Axis(0), t - 1);
        p.expect_close(
            &format!("pairwise_marginals_{t}"),
            &pair.iter().copied().collect::<Vec<_>>(),
        );
    }
    for a in 0..n {
        for b in a..n {
            p.expect_close(
                &format!("segment_loss_{a}_{b}"),
                &[crf.segment_loss(x, &gold, a, b).unwrap()],
            );
        }
    }

    // The file the program wrote, read back by the Rust loader with the same options.
    let options = LoadOptions {
        weight: "emission.weight".into(),
        bias: String::new(),
        transitions: "crf.transitions".into(),
        start: "crf.start".into(),
        end: String::new(),
        transitions_to_from: true,
    };
    let loaded = Crf::load_safetensors(&scratch.join("crf_raii_model.safetensors"), &options)
        .expect("load the safetensors file crf_raii wrote");
    assert_eq!(
        loaded, plain,
        "the safetensors round trip changed the model"
    );
    p.expect_close("loaded_params", &loaded.params());
    p.expect_integers("loaded_equals_plain", &[1]);
    p.expect_integers("moved_num_labels", &[RAII_LABELS.len() as u64]);

    // Each exception carries the status and the message the Rust API gives for the same call.
    let expect_rust_error =
        |p: &mut Printed, key: &str, e: Error| p.expect_error(key, status_name(&e), &e.to_string());
    expect_rust_error(
        &mut p,
        "error_bad_segment",
        crf.segment_loss(x, &gold, 5, 2).unwrap_err(),
    );
    expect_rust_error(
        &mut p,
        "error_segment_past_end",
        crf.segment_loss(x, &gold, 3, n).unwrap_err(),
    );
    let mut bad = gold.clone();
    bad[4] = RAII_LABELS.len() as u32;
    expect_rust_error(
        &mut p,
        "error_label_out_of_range",
        crf.log_likelihood(x, &bad).unwrap_err(),
    );
    expect_rust_error(
        &mut p,
        "error_bad_label_name",
        ConstraintMask::from_labels(TagScheme::Bio, &["O", "B-PER", "I-PER", "B-LOC", "X-LOC"])
            .unwrap_err(),
    );
    expect_rust_error(
        &mut p,
        "error_missing_file",
        Crf::load_safetensors(&scratch.join("no_such_model.safetensors"), &options).unwrap_err(),
    );
    // These two come from the C layer itself, not the Rust API.
    let required = p.rest("error_required_tensor_name");
    assert!(
        required.starts_with("SEGINF_ERR_INVALID_ARGUMENT invalid argument: ")
            && required.contains("required"),
        "error_required_tensor_name: {required}"
    );
    p.expect_error(
        "error_moved_from",
        "SEGINF_ERR_NULL_ARGUMENT",
        "`crf` is NULL",
    );
    p.expect_integers("errors_caught", &[7]);
    p.finish();
}

// ---- examples-c/index_query.c ---------------------------------------------------------------

/// A labelled sequence as the index programs make them: caller id, features (n × d), labels.
struct Sequence {
    doc_id: u64,
    features: Array2<f32>,
    labels: Vec<u32>,
}

impl Sequence {
    fn segment(&self, first: usize, last: usize) -> TestSegment<'_> {
        TestSegment {
            features: self.features.view(),
            labels: &self.labels,
            first,
            last,
        }
    }

    fn training(&self) -> TrainingSequence<'_> {
        TrainingSequence {
            doc_id: self.doc_id,
            features: self.features.view(),
            labels: &self.labels,
        }
    }
}

/// The model of index_query.c: 4 labels, 5 features, bias, start and end, no -inf anywhere;
/// `weight_shift` is added to the first weight (IndexQuery.java's "other" model).
fn index_query_model(weight_shift: f32) -> Crf {
    index_query_model_of(5, weight_shift)
}

/// The same formulas for `d` features (IndexQuery.java's wide model: 64).
fn index_query_model_of(d: usize, weight_shift: f32) -> Crf {
    const C: usize = 4;
    let mut weights: Vec<f32> = (0..C * d)
        .map(|k| dyadic(((k / d) * 7 + (k % d) * 3 + 2) % 11, 5, 8.0))
        .collect();
    weights[0] += weight_shift;
    let transitions: Vec<f32> = (0..C * C)
        .map(|k| dyadic(((k / C) * 5 + (k % C) * 3 + 1) % 9, 4, 8.0))
        .collect();
    let bias: Vec<f32> = (0..C).map(|i| dyadic((i * 5 + 1) % 4, 2, 8.0)).collect();
    let start: Vec<f32> = (0..C).map(|i| dyadic((2 * i + 1) % 5, 2, 8.0)).collect();
    let end: Vec<f32> = (0..C).map(|i| dyadic((3 * i + 2) % 5, 2, 8.0)).collect();
    Crf::from_f32(
        C,
        d,
        &weights,
        Some(&bias),
        &transitions,
        Some(&start),
        Some(&end),
    )
    .unwrap()
}

/// The 12 training sequences of index_query.c (docs 100..112, 3 to 7 tokens).
fn index_query_training() -> Vec<Sequence> {
    index_query_training_of(12, 5, |i| 3 + (3 * i) % 5, 100)
}

/// `count` training sequences of `d` features by index_query.c's formulas, sequence `i` of
/// `len(i)` tokens with doc id `first_doc + i` (IndexQuery.java's wide ones: 24 of 64
/// features, 8 to 12 tokens, docs from 200).
fn index_query_training_of(
    count: usize,
    d: usize,
    len: fn(usize) -> usize,
    first_doc: u64,
) -> Vec<Sequence> {
    (0..count)
        .map(|i| {
            let n = len(i);
            Sequence {
                doc_id: first_doc + i as u64,
                features: Array2::from_shape_fn((n, d), |(t, j)| {
                    dyadic((i * 7 + t * 5 + j * 3 + i * t + 1) % 17, 8, 4.0)
                }),
                labels: (0..n)
                    .map(|t| ((i + 2 * t + (i * t) % 3) % 4) as u32)
                    .collect(),
            }
        })
        .collect()
}

/// The two test sequences of index_query.c.
fn index_query_tests() -> Vec<Sequence> {
    index_query_tests_of(5)
}

/// The same with `d` features.
fn index_query_tests_of(d: usize) -> Vec<Sequence> {
    [vec![0, 1, 2, 0, 3, 0], vec![1, 2, 2, 0, 3]]
        .into_iter()
        .enumerate()
        .map(|(s, labels)| Sequence {
            doc_id: s as u64,
            features: Array2::from_shape_fn((labels.len(), d), |(t, j)| {
                dyadic((s * 11 + t * 3 + j * 7 + s * t + 4) % 15, 7, 4.0)
            }),
            labels,
        })
        .collect()
}

/// The `seginf_storage` value the C ABI reports for a storage type.
fn storage_code(storage: Storage) -> u64 {
    match storage {
        Storage::F32 => 0,
        Storage::F16 => 1,
        Storage::Int8 => 2,
    }
}

/// Checks the lines `<key>_found`, `<key>_supporting` and `<key>_opposing` (hits printed as
/// `doc_id position label score`) against hits computed here.
fn expect_hits(p: &mut Printed, key: &str, want: &TopHits) {
    expect_hits_within(p, key, want, REL_TOL);
}

/// As [`expect_hits`], with the scores to a relative tolerance `rel`.
fn expect_hits_within(p: &mut Printed, key: &str, want: &TopHits, rel: f64) {
    assert_eq!(want.supporting.len(), want.opposing.len(), "{key}");
    p.expect_integers(&format!("{key}_found"), &[want.supporting.len() as u64]);
    for (end, hits) in [
        ("supporting", &want.supporting),
        ("opposing", &want.opposing),
    ] {
        let line = format!("{key}_{end}");
        let words = p.words(&line);
        assert_eq!(
            words.len(),
            4 * hits.len(),
            "{line}: {} words for {} hits",
            words.len(),
            hits.len()
        );
        let ids: Vec<u64> = words
            .chunks(4)
            .flat_map(|w| &w[..3])
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{line}: {v:?} is not an integer"))
            })
            .collect();
        let want_ids: Vec<u64> = hits
            .iter()
            .flat_map(|h| [h.doc_id, u64::from(h.position), u64::from(h.label)])
            .collect();
        assert_eq!(
            ids, want_ids,
            "{line}: (doc_id, position, label) of each hit"
        );
        let scores: Vec<f64> = words
            .chunks(4)
            .map(|w| {
                w[3].parse()
                    .unwrap_or_else(|_| panic!("{line}: {:?} is not a number", w[3]))
            })
            .collect();
        let want_scores: Vec<f64> = hits.iter().map(|h| h.score).collect();
        assert_close_within(&line, &scores, &want_scores, rel);
    }
}

/// The lines `token_single_*` (token 3 of the first test sequence) and `token_entity_*` (its
/// entity, tokens 1–2), 5 hits each, that index_query.c and IndexQuery.java print first.
fn expect_token_queries(p: &mut Printed, q: &mut Query, t0: &Sequence) {
    expect_hits(p, "token_single", &q.run(&t0.segment(3, 3), 5).unwrap());
    expect_hits(p, "token_entity", &q.run(&t0.segment(1, 2), 5).unwrap());
}

#[test]
fn index_query_prints_what_rust_computes() {
    let ran = build_and_run(&example("index_query.c"), "index_query_c");
    let scratch = ran.dir.clone();
    let stdout = ran.expect_success();
    let mut p = Printed::parse(&stdout);
    let crf = Arc::new(index_query_model(0.0));
    let train = index_query_training();
    let tests = index_query_tests();
    let total: usize = train.iter().map(|s| s.labels.len()).sum();

    // Built as the C program builds it: 5 sequences one at a time, then a batch of 7, each call
    // reporting progress against the announced total.
    let mut builder = IndexBuilder::new(
        Arc::clone(&crf),
        BuildOptions {
            storage: Storage::F32,
            expected_tokens: total as u64,
        },
    );
    let (mut calls, mut last) = (0u64, (0u64, 0u64));
    let mut report = |done: u64, total: u64| {
        calls += 1;
        last = (done, total);
        true
    };
    for seq in &train[..5] {
        builder
            .add_batch(&[seq.training()], Some(&mut report))
            .unwrap();
    }
    let one_by_one = builder.num_tokens() as u64;
    let batch: Vec<TrainingSequence> = train[5..].iter().map(Sequence::training).collect();
    builder.add_batch(&batch, Some(&mut report)).unwrap();
    p.expect_integers("tokens_one_by_one", &[one_by_one]);
    p.expect_integers("tokens_built", &[builder.num_tokens() as u64]);
    p.expect_integers("progress", &[calls, last.0, last.1]);
    let index = Arc::new(builder.finish().unwrap());
    let n = index.num_tokens();
    assert_eq!(n, total);
    p.expect_integers(
        "reopened",
        &[
            n as u64,
            index.num_sequences() as u64,
            storage_code(index.storage()),
        ],
    );
    let ids: Vec<u64> = (0..n)
        .flat_map(|k| {
            let (doc, position) = index.token_id(k);
            [doc, u64::from(position), u64::from(index.token_label(k))]
        })
        .collect();
    p.expect_integers("token_ids", &ids);
    p.expect_close("token_loss", index.token_losses());
    p.expect_close("token_entropy", index.token_entropies());
    p.expect_close("token_grad_norm", index.token_grad_norms());

    // The same query object throughout, its options changed between runs as in the program.
    let (t0, t1) = (&tests[0], &tests[1]);
    let mut q = Query::new(Arc::clone(&index));
    p.expect_integers("num_items_token", &[q.num_items() as u64]);
    expect_token_queries(&mut p, &mut q, t0);
    q.options.granularity = Granularity::Instance;
    p.expect_integers("num_items_instance", &[q.num_items() as u64]);
    expect_hits(&mut p, "instance", &q.run(&t0.segment(1, 2), 3).unwrap());
    q.options.granularity = Granularity::NearestCosine;
    expect_hits(
        &mut p,
        "nearest_cosine",
        &q.run(&t0.segment(1, 2), 5).unwrap(),
    );
    q.options.granularity = Granularity::Token;
    q.options.normalization = Normalization::GradientNorm;
    expect_hits(
        &mut p,
        "gradient_norm",
        &q.run(&t0.segment(1, 2), 5).unwrap(),
    );
    q.options.normalization = Normalization::None;
    q.options.labels = Some(vec![0, 3]);
    q.options.excluded_docs = HashSet::from([106]);
    let filtered = q.run(&t0.segment(1, 2), 5).unwrap();
    assert!(
        filtered
            .supporting
            .iter()
            .chain(&filtered.opposing)
            .all(|h| h.doc_id != 106 && (h.label == 0 || h.label == 3)),
        "the filters let through {filtered:?}"
    );
    expect_hits(&mut p, "filtered", &filtered);
    q.options.labels = None;
    q.options.excluded_docs.clear();
    let segments = [t0.segment(0, 0), t0.segment(1, 2), t1.segment(0, 2)];
    for (j, hits) in q.run_batch(&segments, 5).unwrap().iter().enumerate() {
        expect_hits(&mut p, &format!("batch_{j}"), hits);
    }
    let scores = q.scores(&t1.segment(0, 2)).unwrap();
    p.expect_close("scores", &scores);
    q.options.hessian = Hessian::Identity { damping: 0.5 };
    let damped = q.scores(&t1.segment(0, 2)).unwrap();
    p.expect_close("scores_damped", &damped);

    // The file the program saved holds the same index.
    let saved = Index::open(&scratch.join("index_query.seginf"), Arc::clone(&crf))
        .expect("open the index index_query.c saved");
    assert_eq!(
        (saved.num_tokens(), saved.num_sequences(), saved.storage()),
        (n, index.num_sequences(), Storage::F32)
    );
    assert_eq!(saved.token_grad_norms(), index.token_grad_norms());
    let mut from_file = Query::new(Arc::new(saved));
    from_file.options.hessian = Hessian::Identity { damping: 0.5 };
    assert_close(
        "scores from the saved file",
        &from_file.scores(&t1.segment(0, 2)).unwrap(),
        &damped,
    );

    // A build cancelled from its progress callback at the second report.
    let mut cancelled = IndexBuilder::new(Arc::clone(&crf), BuildOptions::default());
    let mut calls = 0u32;
    let mut stop_at_second = |_: u64, _: u64| {
        calls += 1;
        calls < 2
    };
    cancelled
        .add_batch(&[train[0].training()], Some(&mut stop_at_second))
        .unwrap();
    let before = cancelled.num_tokens() as u64;
    let batch: Vec<TrainingSequence> = train[1..4].iter().map(Sequence::training).collect();
    let e = cancelled
        .add_batch(&batch, Some(&mut stop_at_second))
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled(_)), "{e:?}");
    assert_eq!(p.rest("cancel_status"), status_name(&e));
    assert_eq!(p.rest("cancel_message"), e.to_string());
    p.expect_integers("cancel_tokens", &[before, cancelled.num_tokens() as u64]);
    p.expect_integers("cancel_progress_calls", &[u64::from(calls)]);
    p.finish();
}

// ---- examples-c/java: SegInf.java, seginf_jni.c, IndexQuery.java ----------------------------

/// A JDK with the JNI headers: `JAVA_HOME`, else the one whose `javac` is on the PATH.
fn jdk_home() -> PathBuf {
    let has_jni = |home: &Path| home.join("include").join("jni.h").exists();
    if let Some(home) = std::env::var_os("JAVA_HOME").map(PathBuf::from) {
        if has_jni(&home) {
            return home;
        }
    }
    let javac = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("javac"))
                .find(|p| p.exists())
        })
        .and_then(|p| fs::canonicalize(p).ok());
    let home = javac.as_deref().and_then(|p| p.parent()?.parent());
    match home {
        Some(home) if has_jni(home) => home.to_path_buf(),
        _ => panic!(
            "the Java example needs a JDK with its JNI headers (javac on the PATH or JAVA_HOME; \
             `apt-get install default-jdk-headless`, as scripts/setup.sh does)"
        ),
    }
}

/// Builds the JNI glue against the shared library, compiles the Java sources and runs
/// `IndexQuery` under `-Xcheck:jni` (not under the sanitizers: the JVM does not load them).
fn build_and_run_java(name: &str) -> Ran {
    let dir = build_java(name);
    run_java(name, dir, &[])
}

/// The JNI glue and the Java classes built into `name`'s scratch directory (returned).
fn build_java(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    let (jdk, lib, src) = (jdk_home(), library_dir(), example("java"));
    run_checked(
        Command::new(Lang::C.compiler())
            .args(strict_flags(Lang::C))
            .args(["-shared", "-fPIC", "-I"])
            .arg(jdk.join("include"))
            .arg("-I")
            .arg(jdk.join("include").join("linux"))
            .arg("-I")
            .arg(Path::new(MANIFEST_DIR).join("include"))
            .arg(src.join("seginf_jni.c"))
            .arg("-o")
            .arg(dir.join("libseginf_jni.so"))
            .arg(format!("-L{}", lib.display()))
            .arg("-lseginf")
            .arg(format!("-Wl,-rpath,{}", lib.display())),
        "compiling seginf_jni.c",
    );
    run_checked(
        Command::new(jdk.join("bin").join("javac"))
            .args(["-Xlint:all", "-Werror", "-d"])
            .arg(&dir)
            .arg(src.join("SegInf.java"))
            .arg(src.join("IndexQuery.java")),
        "javac",
    );
    dir
}

/// Runs `IndexQuery` built in `dir` under `-Xcheck:jni`, with `envs` added to its environment.
fn run_java(name: &str, dir: PathBuf, envs: &[(&str, &str)]) -> Ran {
    let output = Command::new(jdk_home().join("bin").join("java"))
        .env("LD_LIBRARY_PATH", library_dir()) // as in build_and_run
        .envs(envs.iter().copied())
        .arg("-Xcheck:jni")
        .arg(format!("-Djava.library.path={}", dir.display()))
        .arg("-cp")
        .arg(&dir)
        .arg("IndexQuery")
        .arg(&dir)
        .current_dir(&dir)
        .output()
        .expect("run java");
    let ran = Ran::new("running IndexQuery.java".into(), dir, output);
    // -Xcheck:jni reports misuse of the JNI (a pending exception ignored, a bad reference) as
    // warnings or a fatal error.
    ran.expect_no_report(name, "JNI check report", &["WARNING", "FATAL"]);
    ran
}

/// `SEGINF_AMX=off` keeps a process off the tiles, and the results stay the same: the Java
/// example run with it prints `wide_tiles 0` and every other line as it does without.
#[test]
fn java_index_query_prints_the_same_without_the_tiles() {
    let name = "index_query_java_amx_off";
    let dir = build_java(name);
    let with = run_java(name, dir.clone(), &[]).expect_success();
    let without = run_java(name, dir, &[("SEGINF_AMX", "off")]).expect_success();
    let (tiles, rest): (Vec<&str>, Vec<&str>) =
        without.lines().partition(|l| l.starts_with("wide_tiles "));
    assert_eq!(
        tiles,
        ["wide_tiles 0"],
        "SEGINF_AMX=off keeps the JVM off the tiles"
    );
    let with_rest: Vec<&str> = with
        .lines()
        .filter(|l| !l.starts_with("wide_tiles "))
        .collect();
    assert!(rest.iter().any(|l| l.starts_with("wide_int8_supporting ")));
    assert_eq!(
        rest, with_rest,
        "the same hits and scores without the tiles"
    );
}

#[test]
fn java_index_query_prints_what_rust_computes() {
    let ran = build_and_run_java("index_query_java");
    let saved_path = ran.dir.join("index_query_java.seginf");
    let stdout = ran.expect_success();
    let mut p = Printed::parse(&stdout);
    let crf = Arc::new(index_query_model(0.0));
    let (train, tests) = (index_query_training(), index_query_tests());
    let mut builder = IndexBuilder::new(Arc::clone(&crf), BuildOptions::default());
    for seq in &train {
        builder.add_batch(&[seq.training()], None).unwrap();
    }
    let index = Arc::new(builder.finish().unwrap());
    let n = index.num_tokens() as u64;
    p.expect_integers("tokens_built", &[n]);
    p.expect_integers("reopened", &[n, index.num_sequences() as u64, 0]);

    let (t0, t1) = (&tests[0], &tests[1]);
    let mut q = Query::new(Arc::clone(&index));
    expect_token_queries(&mut p, &mut q, t0);
    q.options.granularity = Granularity::Instance;
    expect_hits(&mut p, "instance", &q.run(&t0.segment(1, 2), 3).unwrap());
    q.options.granularity = Granularity::Token;
    p.expect_close("scores", &q.scores(&t1.segment(0, 2)).unwrap());

    // The library's errors reach Java with their status and message.
    let mut bad = t1.labels.clone();
    bad[1] = 9;
    let segment = TestSegment {
        labels: &bad,
        ..t1.segment(0, 2)
    };
    let e = q.run(&segment, 5).unwrap_err();
    p.expect_error("error_label", status_name(&e), &e.to_string());
    assert_eq!(p.rest("error_length"), "IllegalArgumentException");
    let other = Arc::new(index_query_model(0.125));
    let e = Index::open(&saved_path, other).unwrap_err();
    p.expect_error("error_model", status_name(&e), &e.to_string());

    // At 64 features, int8 and f16 indexes, a 6-token segment: on a CPU with AMX the JVM ran
    // the tile kernels (unless its signal stacks kept Linux from granting them: then the
    // other kernels, and the same hits).
    let java_tiles = p.rest("wide_tiles");
    match (seginf::tiles_available(), java_tiles.as_str()) {
        (_, "0") | (true, "1") => {}
        other => panic!("wide_tiles: (here, Java) = {other:?}"),
    }
    if seginf::tiles_available() && java_tiles == "0" {
        eprintln!("the JVM ran without the AMX tiles (Linux refused them there)");
    }
    let crf = Arc::new(index_query_model_of(64, 0.0));
    let train = index_query_training_of(24, 64, |i| 8 + i % 5, 200);
    let test = &index_query_tests_of(64)[0];
    for (key, storage) in [("wide_int8", Storage::Int8), ("wide_f16", Storage::F16)] {
        let options = BuildOptions {
            storage,
            ..BuildOptions::default()
        };
        let mut builder = IndexBuilder::new(Arc::clone(&crf), options);
        for seq in &train {
            builder.add_batch(&[seq.training()], None).unwrap();
        }
        let index = Arc::new(builder.finish().unwrap());
        let hits = Query::new(index).run(&test.segment(0, 5), 5).unwrap();
        expect_hits(&mut p, key, &hits);
    }
    p.finish();
}

// ---- examples-c/index_query.cpp --------------------------------------------------------------

/// The model of index_query.cpp (5 labels, 4 features, no end scores); `weight_shift` is added
/// to the first weight (0.125 makes the "other" CRF of its model-mismatch check).
fn index_query_cpp_model(weight_shift: f32) -> Crf {
    const C: usize = 5;
    const D: usize = 4;
    let mut weights: Vec<f32> = (0..C * D)
        .map(|k| dyadic(((k / D) * 3 + (k % D) * 5 + 1) % 10, 5, 8.0))
        .collect();
    let transitions: Vec<f32> = (0..C * C)
        .map(|k| dyadic(((k / C) * 4 + (k % C) * 7 + 3) % 10, 5, 8.0))
        .collect();
    let bias: Vec<f32> = (0..C).map(|i| dyadic(i % 3, 1, 8.0)).collect();
    let start: Vec<f32> = (0..C).map(|i| dyadic((2 * i) % 5, 2, 8.0)).collect();
    weights[0] += weight_shift;
    Crf::from_f32(
        C,
        D,
        &weights,
        Some(&bias),
        &transitions,
        Some(&start),
        None,
    )
    .unwrap()
}

/// Training and test sequences of index_query.cpp. Features are sevenths: not exact in half
/// precision (so F16 storage really rounds), but a single correctly rounded division, so the
/// C++ program and this test get the same float bits.
fn index_query_cpp_data() -> (Vec<Sequence>, Vec<Sequence>) {
    let train = (0..10)
        .map(|i| {
            let n = 2 + (2 * i) % 5;
            Sequence {
                doc_id: 500 + 3 * i as u64,
                features: Array2::from_shape_fn((n, 4), |(t, k)| {
                    dyadic((i * 5 + t * 3 + k * 11 + 2) % 19, 9, 7.0)
                }),
                labels: (0..n)
                    .map(|t| ((i + 3 * t + (i * t) % 2) % 5) as u32)
                    .collect(),
            }
        })
        .collect();
    let tests = [vec![0, 1, 2, 0, 3], vec![3, 4, 0, 1]]
        .into_iter()
        .enumerate()
        .map(|(s, labels)| Sequence {
            doc_id: s as u64,
            features: Array2::from_shape_fn((labels.len(), 4), |(t, k)| {
                dyadic((s * 13 + t * 5 + k * 3 + 1) % 17, 8, 7.0)
            }),
            labels,
        })
        .collect();
    (train, tests)
}

#[test]
fn index_query_cpp_prints_what_rust_computes() {
    let ran = build_and_run(&example("index_query.cpp"), "index_query_cpp");
    let scratch = ran.dir.clone();
    let stdout = ran.expect_success();
    let mut p = Printed::parse(&stdout);
    let crf = Arc::new(index_query_cpp_model(0.0));
    let (train, tests) = index_query_cpp_data();

    let mut builder = IndexBuilder::new(
        Arc::clone(&crf),
        BuildOptions {
            storage: Storage::F16,
            expected_tokens: 0,
        },
    );
    let batch: Vec<TrainingSequence> = train.iter().map(Sequence::training).collect();
    builder.add_batch(&batch, None).unwrap();
    p.expect_integers("built_tokens", &[builder.num_tokens() as u64]);
    let index = Arc::new(builder.finish().unwrap());
    let dims = [
        index.num_tokens() as u64,
        index.num_sequences() as u64,
        storage_code(Storage::F16),
    ];
    assert_eq!(index.storage(), Storage::F16);
    p.expect_integers("built", &dims);
    p.expect_integers("reopened", &dims);

    let mut q = Query::new(Arc::clone(&index));
    let entity = q.run(&tests[0].segment(1, 2), 4).unwrap();
    expect_hits(&mut p, "entity", &entity);
    let segments = [
        tests[0].segment(3, 3),
        tests[1].segment(0, 1),
        tests[1].segment(2, 3),
    ];
    for (j, hits) in q.run_batch(&segments, 4).unwrap().iter().enumerate() {
        expect_hits(&mut p, &format!("batch_{j}"), hits);
    }
    q.options.granularity = Granularity::Instance;
    expect_hits(
        &mut p,
        "instance",
        &q.run(&tests[1].segment(0, 1), 2).unwrap(),
    );

    // The saved F16 file ranks the same, and refuses a CRF it was not built for.
    let path = scratch.join("index_query_f16.seginf");
    let saved = Index::open(&path, Arc::clone(&crf)).expect("open the index index_query.cpp saved");
    assert_eq!(saved.storage(), Storage::F16);
    let mut from_file = Query::new(Arc::new(saved));
    assert_eq!(from_file.run(&tests[0].segment(1, 2), 4).unwrap(), entity);
    let other = Arc::new(index_query_cpp_model(0.125));
    let e = Index::open(&path, other).unwrap_err();
    assert!(matches!(e, Error::ModelMismatch(_)), "{e:?}");
    p.expect_error("error_model_mismatch", status_name(&e), &e.to_string());
    p.finish();
}

// ---- examples-c/train_influence.c ------------------------------------------------------------

/// Training and the Hessian modes run the same code in the C program and here, so the objective
/// and every iteration count must agree exactly; the values derived from long computations are
/// compared to this relative tolerance (a looser one than REL_TOL, against a different BLAS
/// build or summation order in the conjugate-gradient and L-BFGS loops).
const TRAIN_REL_TOL: f64 = 1e-9;

mod train_influence {
    use super::*;

    pub const C: usize = 3;
    pub const D: usize = 4;
    pub const S: usize = 12;
    pub const PARTIAL: usize = 11;
    pub const UNLABELLED_AT: usize = 2;
    pub const TEST_N: usize = 6;
    pub const TEST_FIRST: usize = 2;
    pub const TEST_LAST: usize = 3;
    pub const REMOVALS: [(usize, usize); 3] = [(0, 1), (5, 0), (9, 2)];

    /// The teacher of train_influence.c (O -> I forbidden) and the student it trains from
    /// (zeros, with the same constraint and blocks).
    pub fn models() -> (Crf, Crf) {
        let mut weights = vec![0f32; C * D];
        let mut transitions = vec![0f32; C * C];
        let (mut bias, mut start, mut end) = (vec![0f32; C], vec![0f32; C], vec![0f32; C]);
        for i in 0..C {
            for j in 0..D {
                weights[i * D + j] = dyadic((i * 5 + j * 3 + 1) % 9, 4, 4.0);
            }
            for j in 0..C {
                transitions[i * C + j] = dyadic((i * 7 + j * 3 + 2) % 7, 3, 4.0);
            }
            bias[i] = dyadic((i * 2 + 3) % 5, 2, 4.0);
            start[i] = dyadic((2 * i + 1) % 3, 1, 4.0);
            end[i] = dyadic((i + 2) % 3, 1, 8.0);
        }
        transitions[2] = f32::NEG_INFINITY;
        let teacher = Crf::from_f32(
            C,
            D,
            &weights,
            Some(&bias),
            &transitions,
            Some(&start),
            Some(&end),
        )
        .unwrap();
        let zeros = vec![0f32; C * D];
        let mut student_transitions = vec![0f32; C * C];
        student_transitions[2] = f32::NEG_INFINITY;
        let z = vec![0f32; C];
        let student = Crf::from_f32(
            C,
            D,
            &zeros,
            Some(&z),
            &student_transitions,
            Some(&z),
            Some(&z),
        )
        .unwrap();
        (teacher, student)
    }

    /// The training sequences as the program labels them: the teacher's Viterbi path with
    /// position 1 of every fourth sequence relabelled B; the last sequence with token 2
    /// unlabelled (stored as label 0, as the C ABI stores it).
    pub fn training(teacher: &Crf) -> Vec<TrainSeq> {
        (0..S)
            .map(|i| {
                let n = 4 + (3 * i) % 4;
                let x = Array2::from_shape_fn((n, D), |(t, j)| {
                    dyadic((i * 7 + t * 5 + j * 3 + i * t + 1) % 17, 8, 4.0)
                });
                let mut y = teacher.viterbi(x.view()).unwrap().0;
                if i % 4 == 1 {
                    y[1] = 1;
                }
                let mut seq = TrainSeq::labelled(x, y);
                if i == PARTIAL {
                    seq.observed[UNLABELLED_AT] = false;
                }
                seq
            })
            .collect()
    }

    /// The test sequence: the teacher's labels with position TEST_FIRST relabelled B.
    pub fn test(teacher: &Crf) -> (Array2<f32>, Vec<u32>) {
        let x = Array2::from_shape_fn((TEST_N, D), |(t, j)| {
            dyadic((t * 7 + j * 5 + 3) % 13, 6, 4.0)
        });
        let mut y = teacher.viterbi(x.view()).unwrap().0;
        y[TEST_FIRST] = 1;
        (x, y)
    }
}

#[test]
fn train_influence_prints_what_rust_computes() {
    use seginf::hessian::{ExactInverse, Factored, KroneckerInverse};
    use seginf::influence::{exact_influence, TrainingSegment};
    use seginf::query::InverseHessian;
    use seginf::train::{train, TrainOptions};
    use train_influence::*;

    let stdout = build_and_run(&example("train_influence.c"), "train_influence").expect_success();
    let mut p = Printed::parse(&stdout);
    let (teacher, student) = models();
    let mut data = training(&teacher);
    let (test_x, test_y) = test(&teacher);

    // The labels as printed: the unlabelled token still shows the teacher's label.
    let printed_labels: Vec<u32> = data.iter().flat_map(|s| s.labels.clone()).collect();
    p.expect_integers("train_labels", &ints(&printed_labels));
    p.expect_integers("test_labels", &ints(&test_y));
    data[PARTIAL].labels[UNLABELLED_AT] = 0;
    p.expect_integers("num_sequences", &[S as u64]);

    let options = TrainOptions {
        l2: 1.0 / 32.0,
        tolerance: 1e-9,
        max_iterations: 500,
        ..TrainOptions::default()
    };
    let mut calls = 0u64;
    let mut last = (0usize, 0.0, 0.0);
    let mut record = |iteration: usize, objective: f64, gradient: f64| {
        calls += 1;
        last = (iteration, objective, gradient);
        true
    };
    let fit = train(&student, &data, &options, Some(&mut record)).unwrap();
    assert!(fit.converged, "{fit:?}");
    // The same code on the same data: equal to the last bit, not merely close.
    assert_eq!(p.f64s("objective"), [fit.objective], "objective");
    assert_eq!(p.f64s("max_abs_gradient"), [fit.max_abs_gradient]);
    p.expect_integers("iterations", &[fit.iterations as u64]);
    let progress = p.words("progress");
    assert_eq!(progress.len(), 4, "progress: {progress:?}");
    assert_eq!(
        (
            progress[0].parse::<u64>().unwrap(),
            progress[1].parse::<usize>().unwrap(),
            progress[2].parse::<f64>().unwrap(),
            progress[3].parse::<f64>().unwrap(),
        ),
        (calls, last.0, last.1, last.2),
        "progress: calls, last iteration, objective, max |gradient|"
    );
    assert_eq!(calls, fit.iterations as u64);
    p.expect_close_within("trained_params", &fit.crf.params(), TRAIN_REL_TOL);
    let crf = Arc::new(fit.crf);

    p.expect_integers("curvature_modes", &[1, 2, 3]);
    let l2 = options.l2;
    let kfac: Arc<dyn InverseHessian> =
        Arc::new(KroneckerInverse::fit(Arc::clone(&crf), &data, l2, 0.0, Factored::Kfac).unwrap());
    let ekfac: Arc<dyn InverseHessian> =
        Arc::new(KroneckerInverse::fit(Arc::clone(&crf), &data, l2, 0.0, Factored::Ekfac).unwrap());
    let data = Arc::new(data);
    let exact = Arc::new(ExactInverse::new(
        Arc::clone(&crf),
        Arc::clone(&data),
        l2,
        0.0,
    ));

    let mut builder = IndexBuilder::new(Arc::clone(&crf), BuildOptions::default());
    for (i, seq) in data.iter().enumerate().filter(|(i, _)| *i != PARTIAL) {
        builder
            .add(i as u64, seq.features.view(), &seq.labels)
            .unwrap();
    }
    let mut query = Query::new(Arc::new(builder.finish().unwrap()));
    let segment = TestSegment {
        features: test_x.view(),
        labels: &test_y,
        first: TEST_FIRST,
        last: TEST_LAST,
    };
    let modes: [(&str, Hessian); 4] = [
        ("identity", Hessian::Identity { damping: 1.0 }),
        ("kfac", Hessian::Inverse(Arc::clone(&kfac))),
        ("ekfac", Hessian::Inverse(Arc::clone(&ekfac))),
        ("exact", Hessian::Inverse(exact.clone())),
    ];
    for (name, hessian) in modes {
        query.options.hessian = hessian;
        let scores = query.scores(&segment).unwrap();
        p.expect_close_within(&format!("scores_{name}"), &scores, TRAIN_REL_TOL);
    }
    let (cg_iterations, residual) = exact.last_solve().unwrap();
    let printed = p.words("exact_last_solve");
    assert_eq!(printed[0], cg_iterations.to_string(), "CG iterations");
    assert_close_within(
        "exact_last_solve residual",
        &[printed[1].parse().unwrap()],
        &[residual],
        TRAIN_REL_TOL,
    );
    let hits = query.run(&segment, 3).unwrap();
    expect_hits_within(&mut p, "exact", &hits, TRAIN_REL_TOL);
    query.options.hessian = Hessian::Identity { damping: 2.0 };
    p.expect_close_within(
        "scores_identity_damped",
        &query.scores(&segment).unwrap(),
        TRAIN_REL_TOL,
    );

    /// `H = I`: the prediction seginf_exact_influence makes without a curvature.
    #[derive(Debug)]
    struct Identity;
    impl InverseHessian for Identity {
        fn apply(&self, g: &[f64]) -> seginf::Result<Vec<f64>> {
            Ok(g.to_vec())
        }
    }
    let inverses: [(&str, &dyn InverseHessian); 4] = [
        ("identity", &Identity),
        ("kfac", kfac.as_ref()),
        ("ekfac", ekfac.as_ref()),
        ("exact", exact.as_ref()),
    ];
    for (sequence, position) in REMOVALS {
        for (name, inverse) in inverses {
            let r = exact_influence(
                &crf,
                &data,
                &options,
                TrainingSegment {
                    sequence,
                    first: position,
                    last: position,
                },
                &segment,
                inverse,
            )
            .unwrap();
            assert!(r.converged);
            p.expect_close_within(
                &format!("influence_{name}_{sequence}_{position}"),
                &[r.actual, r.predicted],
                TRAIN_REL_TOL,
            );
        }
    }

    // Warm start from the trained model: already at the tolerance, no step and no callback.
    let warm = train(&crf, &data, &options, None).unwrap();
    assert!(warm.converged);
    p.expect_integers("warm_iterations", &[warm.iterations as u64, 0]);

    let mut stop_at_three = |iteration: usize, _: f64, _: f64| iteration < 3;
    let e = train(&student, &data, &options, Some(&mut stop_at_three)).unwrap_err();
    p.expect_error("cancel", status_name(&e), &e.to_string());
    p.expect_integers("cancel_calls", &[3]);
    let capped = TrainOptions {
        max_iterations: 1,
        ..options
    };
    let one = train(&student, &data, &capped, None).unwrap();
    assert!(!one.converged);
    let line = p.rest("capped");
    assert!(
        line.starts_with(
            "SEGINF_ERR_NOT_CONVERGED not converged: training stopped after 1 L-BFGS steps"
        ) && line.contains("seginf_trainer_set_max_iterations"),
        "capped: {line}"
    );
    p.finish();
}

// ---- examples-c/null_args.c and examples-c/index_null_args.c ------------------------------

/// Runs a bad-input program (one `ok ...`/`FAIL ...` line per check, then "N passed, M failed"),
/// requires every check to pass, at least `min_checks` of them, and every C function exported
/// from the `scope` files to be named in the program.
fn check_bad_input_program(file: &str, scope: &[&str], min_checks: usize) {
    let name = file.trim_end_matches(".c");
    let ran = build_and_run(&example(file), name);
    let failures: Vec<&str> = ran
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert!(
        failures.is_empty(),
        "{file}: {} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let stdout = ran.expect_success();
    let summary = stdout.lines().last().unwrap_or("");
    let passed: usize = summary
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{file}: bad summary line {summary:?}\n{stdout}"));
    let ok_lines = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(
        passed, ok_lines,
        "{file}: summary disagrees with the lines printed"
    );
    assert!(passed >= min_checks, "{file} ran only {passed} checks");

    // Every entry point of its scope is exercised: each function exported from those files
    // and declared in the header is named in the program.
    let header = fs::read_to_string(Path::new(MANIFEST_DIR).join("include/seginf.h")).unwrap();
    let declared = header_declarations(&header).functions;
    let program = fs::read_to_string(example(file)).unwrap();
    let mut in_scope = Vec::new();
    for source_file in scope {
        let source = fs::read_to_string(Path::new(MANIFEST_DIR).join(source_file)).unwrap();
        let found = exported_functions(&source);
        assert!(!found.is_empty(), "no extern \"C\" fn in {source_file}");
        in_scope.extend(found);
    }
    let undeclared: Vec<&String> = in_scope.iter().filter(|f| !declared.contains(f)).collect();
    assert!(
        undeclared.is_empty(),
        "not in include/seginf.h: {undeclared:?}"
    );
    let missing: Vec<&String> = in_scope
        .iter()
        .filter(|name| !mentions(&program, name))
        .collect();
    assert!(missing.is_empty(), "{file} does not call {missing:?}");
}

#[test]
fn null_args_gets_the_right_error_from_every_function() {
    check_bad_input_program("null_args.c", &NULL_ARGS_SCOPE, 200);
    let mut in_scope = Vec::new();
    for file in NULL_ARGS_SCOPE {
        in_scope.extend(exported_functions(
            &fs::read_to_string(Path::new(MANIFEST_DIR).join(file)).unwrap(),
        ));
    }
    assert!(
        in_scope.len() >= 20,
        "found only {in_scope:?} in {NULL_ARGS_SCOPE:?}"
    );
}

#[test]
fn index_null_args_gets_the_right_error_from_every_function() {
    check_bad_input_program("index_null_args.c", &INDEX_NULL_ARGS_SCOPE, 200);
}

#[test]
fn train_null_args_gets_the_right_error_from_every_function() {
    check_bad_input_program("train_null_args.c", &TRAIN_NULL_ARGS_SCOPE, 140);
}

/// The C entry points null_args.c covers: the status/error functions and the CRF handle with its
/// loader options.
const NULL_ARGS_SCOPE: [&str; 2] = ["src/ffi/boundary.rs", "src/ffi/crf.rs"];

/// The C entry points index_null_args.c covers: index options, builder, index, query, and
/// noisy-label ranking.
const INDEX_NULL_ARGS_SCOPE: [&str; 3] =
    ["src/ffi/index.rs", "src/ffi/query.rs", "src/ffi/rank.rs"];

/// The C entry points train_null_args.c covers: trainer, curvatures, exact influence (it also
/// checks seginf_query_set_curvature and seginf_query_set_hessian with fitted modes, which
/// index_null_args.c covers for NULLs).
const TRAIN_NULL_ARGS_SCOPE: [&str; 1] = ["src/ffi/train.rs"];

/// Every file of src/ffi/ that exports C functions is in one of the scopes above, so a new
/// entry point cannot go untested by the bad-input programs.
#[test]
fn bad_input_programs_cover_every_ffi_file() {
    let dir = Path::new(MANIFEST_DIR).join("src/ffi");
    let mut files: Vec<String> = fs::read_dir(&dir)
        .expect("read src/ffi/")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "rs")
                && !exported_functions(&fs::read_to_string(p).unwrap()).is_empty()
        })
        .map(|p| format!("src/ffi/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    files.sort();
    let covered: Vec<&str> = NULL_ARGS_SCOPE
        .iter()
        .chain(&INDEX_NULL_ARGS_SCOPE)
        .chain(&TRAIN_NULL_ARGS_SCOPE)
        .copied()
        .collect();
    let uncovered: Vec<&String> = files
        .iter()
        .filter(|f| !covered.contains(&f.as_str()))
        .collect();
    assert!(
        uncovered.is_empty(),
        "no bad-input program covers {uncovered:?}"
    );
}

/// Names of the `extern "C" fn`s defined in a Rust source file.
fn exported_functions(source: &str) -> Vec<String> {
    source
        .split("extern \"C\" fn ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .map(|name| name.trim().to_string())
        .collect()
}

/// Whether `text` contains the identifier `name` (not only as part of a longer one).
fn mentions(text: &str, name: &str) -> bool {
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    text.match_indices(name).any(|(at, _)| {
        !ident(text[..at].chars().next_back()) && !ident(text[at + name.len()..].chars().next())
    })
}

// ---- every program in examples-c/ ------------------------------------------------------------

/// Programs with a test above that checks their output.
const CHECKED_PROGRAMS: [&str; 8] = [
    "crf_basic.c",
    "crf_raii.cpp",
    "null_args.c",
    "index_query.c",
    "index_query.cpp",
    "index_null_args.c",
    "train_influence.c",
    "train_null_args.c",
];

#[test]
fn every_program_in_examples_c_builds_and_runs() {
    let dir = Path::new(MANIFEST_DIR).join("examples-c");
    let mut programs: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("read examples-c/")
        .map(|e| e.unwrap().path())
        .filter(|p| Lang::of(p).is_some())
        .collect();
    programs.sort();
    let names: Vec<String> = programs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".c")) && names.iter().any(|n| n.ends_with(".cpp")),
        "examples-c/ needs a C and a C++ program, has {names:?}"
    );
    for name in CHECKED_PROGRAMS {
        assert!(names.iter().any(|n| n == name), "examples-c/{name} is gone");
    }
    // The others (new programs) must at least build and run cleanly under the sanitizers.
    for (path, name) in programs.iter().zip(&names) {
        if !CHECKED_PROGRAMS.contains(&name.as_str()) {
            build_and_run(path, &format!("other_{name}")).expect_success();
        }
    }
}
