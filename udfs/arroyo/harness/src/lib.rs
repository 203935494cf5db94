//! Builds a generated single-file Arroyo UDF the way Arroyo does (a cdylib crate with the
//! file as `lib.rs`, dependencies from its `/* [dependencies] */` header, edition 2021) and
//! calls its exported `__run` through the same FFI types Arroyo's host uses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arroyo_udf_plugin::arrow::array::{Array, ArrayData, ArrayRef, make_array};
use arroyo_udf_plugin::arrow::ffi::from_ffi;
use arroyo_udf_plugin::{FfiArraySchema, FfiArrays, RunResult};

/// The `[dependencies]` lines of a UDF file's header comment.
pub fn header_dependencies(src: &str) -> Result<String, String> {
    let rest = src
        .strip_prefix("/*")
        .ok_or("the UDF must start with a /* [dependencies] */ comment")?;
    let end = rest.find("*/").ok_or("unterminated header comment")?;
    let header = rest[..end].trim();
    let deps = header
        .strip_prefix("[dependencies]")
        .ok_or("the header comment must start with [dependencies]")?;
    Ok(deps.trim().to_string())
}

/// Writes `src` as a cdylib crate named `name` under `dir` and builds it with cargo into
/// `target_dir`; returns the path of the shared library.
pub fn build_udf(src: &str, name: &str, dir: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    let deps = header_dependencies(src)?;
    std::fs::create_dir_all(dir.join("src")).map_err(|e| e.to_string())?;
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n\n[dependencies]\n\
         arroyo-udf-plugin = \"=0.2.0\"\n{deps}\n\n[profile.dev]\ndebug = false\n"
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("src/lib.rs"), src).map_err(|e| e.to_string())?;
    // Same versions as this harness, so the arrow 51 build is shared.
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock");
    if lock.exists() {
        std::fs::copy(&lock, dir.join("Cargo.lock")).map_err(|e| e.to_string())?;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build of the UDF failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let lib = target_dir
        .join("debug")
        .join(format!("lib{}.so", name.replace('-', "_")));
    if !lib.exists() {
        return Err(format!("{} was not produced", lib.display()));
    }
    Ok(lib)
}

type RunFn = unsafe extern "C-unwind" fn(FfiArrays) -> RunResult;

/// A loaded UDF library.
pub struct LoadedUdf {
    _lib: libloading::Library,
    run: RunFn,
}

impl LoadedUdf {
    /// Loads the shared library and resolves `__run`.
    ///
    /// # Safety
    /// `path` must be a library built by [`build_udf`] from an `#[udf]` file.
    pub unsafe fn load(path: &Path) -> Result<Self, String> {
        // SAFETY: loading a library we just built; its initialisers are Rust's defaults.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
        // SAFETY: `__run` has this signature in every arroyo-udf-plugin 0.2 sync UDF.
        let run: RunFn = unsafe {
            *lib.get::<RunFn>(b"__run\0")
                .map_err(|e| format!("no __run in {}: {e}", path.display()))?
        };
        Ok(LoadedUdf { _lib: lib, run })
    }

    /// Calls the UDF on one batch of argument arrays, as Arroyo's host does.
    pub fn call(&self, args: &[ArrayRef]) -> Result<ArrayRef, String> {
        let data: Vec<ArrayData> = args.iter().map(|a| a.to_data()).collect();
        // SAFETY: FfiArrays/RunResult come from the same arroyo-udf-common version the
        // library was built against, and `run` consumes the arrays it is given.
        let result = unsafe { (self.run)(FfiArrays::from_vec(data)) };
        match result {
            RunResult::Ok(FfiArraySchema(array, schema)) => {
                // SAFETY: the library exported a valid C Data Interface array.
                let data = unsafe { from_ffi(array, &schema) }.map_err(|e| e.to_string())?;
                Ok(Arc::new(make_array(data)) as ArrayRef)
            }
            RunResult::Err => Err("the UDF panicked".into()),
        }
    }
}
