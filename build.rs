//! Generates the C header with cbindgen. The header is written to `$OUT_DIR/seginf.h` on every
//! build (a test compares it with the committed `include/seginf.h`); set
//! `SEGINF_UPDATE_HEADER=1` to also overwrite `include/seginf.h`.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    // cbindgen reads the whole crate (a public constant anywhere would be exported).
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=SEGINF_UPDATE_HEADER");

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml must parse");
    let version = |part: &str| env::var(format!("CARGO_PKG_VERSION_{part}")).expect("set by cargo");
    let macros = format!(
        "#define SEGINF_VERSION_MAJOR {}\n#define SEGINF_VERSION_MINOR {}\n#define SEGINF_VERSION_PATCH {}",
        version("MAJOR"),
        version("MINOR"),
        version("PATCH")
    );
    let generated = out_dir.join("seginf.h");
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .with_after_include(macros)
        .generate()
        .expect("cbindgen failed to generate the header")
        .write_to_file(&generated);
    println!(
        "cargo:rustc-env=SEGINF_GENERATED_HEADER={}",
        generated.display()
    );
    if env::var("SEGINF_UPDATE_HEADER").is_ok_and(|v| v == "1") {
        std::fs::copy(&generated, crate_dir.join("include/seginf.h"))
            .expect("cannot write include/seginf.h");
    }
}
