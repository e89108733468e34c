//! Python images for warm pod pools specialised by code (issue 12 part 3), built from the
//! host's Debian `python3.11` and pushed to a test [`Registry`]:
//! - [`runtime`]: Kinetic's Fission-protocol runtime (`python/server.py`, standard library
//!   only) with a generated dependency (`bigdep`) that it pre-imports at start, as an
//!   environment image ships and loads its frameworks;
//! - [`app_code`]: the app's code alone (`main.py`, and the same file as `user` for Fission's
//!   v1 interface), to inject into a runtime pool pod;
//! - [`app`]: the same app as a self-contained image (interpreter, runtime, dependency, code):
//!   the "no pool" case, where the dependency's import cost is paid at every start.
//!
//! The app's import cost is real: `bigdep` is [`BIGDEP_MODULES`] generated modules of
//! dataclasses, enums and tables, with their `.pyc` files (compiled at build time with
//! unchecked hashes, as an installed package has them), about 0.3–1 s to import.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context as _;
use kinetic_image::ImageConfig;
use kinetic_image::push::{Compression, Format, ImageSpec, Layer, TarBuilder};

use crate::images::{busybox_layer, push};
use crate::registry::Registry;

/// The interpreter the images are built from (Debian 12's python3.11 package).
pub const PYTHON: &str = "/usr/bin/python3.11";
/// The runtime's source.
pub const SERVER_PY: &str = include_str!("../python/server.py");
/// The runtime's port (Fission's).
pub const PORT: u16 = 8888;
/// The app's function, as Fission's `functionName` (and the self-contained image's argument).
pub const APP_FUNCTION: &str = "main.handler";
/// What the app answers.
pub const APP_ANSWER: &str = "hello from python\n";
/// The app's code: imports the dependency, answers [`APP_ANSWER`].
pub const APP_MAIN: &str = "import bigdep\n\n\ndef handler():\n    return \"hello from python\\n\"\n\n\ndef main():\n    return handler()\n";
/// How many modules the generated dependency has.
pub const BIGDEP_MODULES: usize = 120;

/// Standard library parts left out of the images (tests, GUIs, build files: ~30 MB).
const STDLIB_SKIP: &[&str] = &[
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "lib2to3",
    "ensurepip",
    "distutils",
    "pydoc_data",
    "site-packages",
    "dist-packages",
    "config-3.11-x86_64-linux-gnu",
];

fn add_tree(t: &mut TarBuilder, host: &Path, at: &str, skip: &[&str]) -> anyhow::Result<()> {
    t.dir(at, 0o755)?;
    let mut entries: Vec<_> = std::fs::read_dir(host)
        .with_context(|| format!("reading {}", host.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let path = format!("{at}/{name}");
        let ft = e.file_type()?;
        if ft.is_symlink() {
            let target = std::fs::read_link(e.path())?;
            t.symlink(&path, &target.to_string_lossy())?;
        } else if ft.is_dir() {
            add_tree(t, &e.path(), &path, &[])?;
        } else if ft.is_file() {
            // The host's mtime: Debian's `.pyc` files check their source's mtime, and a
            // mismatch would recompile the standard library at every start.
            let mtime = e.metadata()?.modified()?;
            let secs = mtime.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            t.mtime(secs);
            t.host_file(&path, &e.path())?;
        }
    }
    Ok(())
}

/// The shared libraries `ldd` lists for `files`.
fn libraries(files: &[PathBuf]) -> anyhow::Result<BTreeSet<PathBuf>> {
    let out = std::process::Command::new("ldd").args(files).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        // With several files ldd heads each one's list with `<file>:`.
        if line.ends_with(':') {
            continue;
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.insert(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// The tar of the interpreter layer: `/usr/bin/python3.11` (and `python3`), the libraries it
/// and its extension modules link, and the standard library without [`STDLIB_SKIP`].
///
/// # Errors
/// python3.11 is missing (install the Debian package python3.11) or cannot be read.
pub fn interpreter_tar() -> anyhow::Result<Vec<u8>> {
    let python = Path::new(PYTHON);
    anyhow::ensure!(python.exists(), "{PYTHON} is missing: install the Debian package python3.11");
    let stdlib = Path::new("/usr/lib/python3.11");
    let mut bins = vec![python.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(stdlib.join("lib-dynload")) {
        bins.extend(rd.filter_map(Result::ok).map(|e| e.path()));
    }
    let mut t = TarBuilder::new();
    t.dir("usr/lib", 0o755)?;
    t.host_file("usr/bin/python3.11", python)?;
    t.symlink("usr/bin/python3", "python3.11")?;
    let mut dirs = BTreeSet::new();
    for lib in libraries(&bins)? {
        let rel = lib.to_string_lossy().trim_start_matches('/').to_owned();
        if let Some(parent) = Path::new(&rel).parent() {
            let parent = parent.to_string_lossy().into_owned();
            if dirs.insert(parent.clone()) {
                t.dir(&parent, 0o755)?;
            }
        }
        t.host_file(&rel, &lib)?;
    }
    add_tree(&mut t, stdlib, "usr/lib/python3.11", STDLIB_SKIP)?;
    Ok(t.finish()?)
}

/// One generated module of `bigdep`.
fn bigdep_module(i: usize) -> String {
    use std::fmt::Write as _;
    let mut s = format!("\"\"\"Generated module {i}.\"\"\"\nimport dataclasses\nimport enum\n\n");
    for j in 0..12 {
        let _ = write!(
            s,
            "\n@dataclasses.dataclass\nclass Model{j}:\n    a: int = {j}\n    b: str = 'x{j}'\n    c: float = {j}.5\n\n    def total(self):\n        return self.a + len(self.b) + self.c\n\n"
        );
    }
    for j in 0..20 {
        let _ = write!(s, "\ndef f{j}(x, y={j}):\n    return [x * y + k for k in range({j})]\n\n");
    }
    s.push_str("\nclass Kind(enum.Enum):\n");
    for k in 0..10 {
        let _ = writeln!(s, "    K{k} = {k}");
    }
    let _ = writeln!(s, "\n\nTABLE = {{f'k{{i}}': f{}(i) for i in range(50)}}", i % 20);
    s
}

/// The tar of `/runtime`: `server.py` and `lib/bigdep` with `.pyc` files (compiled by the
/// host's python3.11 with unchecked hashes, so the tar's fixed mtimes do not invalidate them).
///
/// # Errors
/// Writing the sources or compiling them failed.
pub fn runtime_tar() -> anyhow::Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let pkg = dir.path().join("bigdep");
    std::fs::create_dir_all(&pkg)?;
    let mut init = String::from("\"\"\"A generated dependency with a real import cost.\"\"\"\n");
    for i in 0..BIGDEP_MODULES {
        std::fs::write(pkg.join(format!("m{i:03}.py")), bigdep_module(i))?;
        init.push_str(&format!("from . import m{i:03}  # noqa\n"));
    }
    init.push_str(&format!("MODULES = {BIGDEP_MODULES}\n"));
    std::fs::write(pkg.join("__init__.py"), init)?;
    let status = std::process::Command::new(PYTHON)
        .args(["-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash"])
        .arg(&pkg)
        .status()
        .context("compiling bigdep")?;
    anyhow::ensure!(status.success(), "compiling bigdep: {status}");
    let mut t = TarBuilder::new();
    t.dir("runtime", 0o755)?;
    t.file("runtime/server.py", SERVER_PY.as_bytes(), 0o644)?;
    t.dir("runtime/lib", 0o755)?;
    add_tree(&mut t, &pkg, "runtime/lib/bigdep", &[])?;
    t.dir("userfunc", 0o777)?;
    Ok(t.finish()?)
}

fn cached(
    cell: &'static OnceLock<Result<Layer, String>>,
    tar: fn() -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Layer> {
    cell.get_or_init(|| {
        tar()
            .and_then(|tar| Ok(Layer::from_tar(&tar, Compression::Gzip, Format::Oci)?))
            .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// The interpreter layer, built once per process.
///
/// # Errors
/// As [`interpreter_tar`].
pub fn interpreter_layer() -> anyhow::Result<Layer> {
    static LAYER: OnceLock<Result<Layer, String>> = OnceLock::new();
    cached(&LAYER, interpreter_tar)
}

/// The runtime layer, built once per process.
///
/// # Errors
/// As [`runtime_tar`].
pub fn runtime_layer() -> anyhow::Result<Layer> {
    static LAYER: OnceLock<Result<Layer, String>> = OnceLock::new();
    cached(&LAYER, runtime_tar)
}

fn runtime_config(env: &[&str], cmd: &[&str]) -> ImageConfig {
    let mut e = vec![
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        "PYTHONPATH=/runtime/lib".to_owned(),
        "USERFUNCVOL=/userfunc".to_owned(),
        format!("RUNTIME_PORT={PORT}"),
    ];
    e.extend(env.iter().map(|s| (*s).to_owned()));
    ImageConfig {
        entrypoint: vec![PYTHON.to_owned(), "/runtime/server.py".to_owned()],
        cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
        env: e,
        working_dir: Some("/".to_owned()),
        ..ImageConfig::default()
    }
}

/// Pushes the runtime image (the pool's environment) as `<registry>/python-env:<tag>`: it
/// listens on [`PORT`] unspecialised, with `bigdep` already imported.
///
/// # Errors
/// An image layer cannot be built or the push fails.
pub async fn runtime(registry: &Registry, tag: &str) -> anyhow::Result<String> {
    let layers = vec![busybox_layer()?, interpreter_layer()?, runtime_layer()?];
    let reference = format!("{}/python-env:{tag}", registry.addr());
    let config = runtime_config(&["PRELOAD=bigdep"], &[]);
    push(&reference, ImageSpec { config, layers, ..ImageSpec::default() }).await?;
    Ok(reference)
}

/// Pushes a code image of `files` (`(path, content)` at its root) as `<registry>/<repo>:<tag>`:
/// one layer, no runtime of its own.
///
/// # Errors
/// The push fails.
pub async fn code(
    registry: &Registry,
    repo: &str,
    tag: &str,
    files: &[(&str, &str)],
) -> anyhow::Result<String> {
    let mut t = TarBuilder::new();
    for (path, content) in files {
        t.file(path.trim_start_matches('/'), content.as_bytes(), 0o644)?;
    }
    let layer = Layer::from_tar(&t.finish()?, Compression::Gzip, Format::Oci)?;
    let reference = format!("{}/{repo}:{tag}", registry.addr());
    push(&reference, ImageSpec { layers: vec![layer], ..ImageSpec::default() }).await?;
    Ok(reference)
}

/// Pushes the app's code image as `<registry>/python-app-code:<tag>`: `main.py` (v2,
/// [`APP_FUNCTION`]) and the same code as `user` (v1 loads `main` from it).
///
/// # Errors
/// The push fails.
pub async fn app_code(registry: &Registry, tag: &str) -> anyhow::Result<String> {
    code(registry, "python-app-code", tag, &[("main.py", APP_MAIN), ("user", APP_MAIN)]).await
}

/// Pushes the app as a self-contained image as `<registry>/python-app:<tag>`: the runtime
/// loads `/app` at start (its argument, by default [`APP_FUNCTION`], names the function), so
/// `bigdep` is imported during every start.
///
/// # Errors
/// An image layer cannot be built or the push fails.
pub async fn app(registry: &Registry, tag: &str) -> anyhow::Result<String> {
    let mut t = TarBuilder::new();
    t.dir("app", 0o755)?;
    t.file("app/main.py", APP_MAIN.as_bytes(), 0o644)?;
    let app = Layer::from_tar(&t.finish()?, Compression::Gzip, Format::Oci)?;
    let layers = vec![busybox_layer()?, interpreter_layer()?, runtime_layer()?, app];
    let reference = format!("{}/python-app:{tag}", registry.addr());
    let config = runtime_config(&["CODE=/app"], &[APP_FUNCTION]);
    push(&reference, ImageSpec { config, layers, ..ImageSpec::default() }).await?;
    Ok(reference)
}

/// A PodPool manifest of [`runtime`] pods specialised by code (Fission's `userfunc` volume at
/// `/userfunc`, port [`PORT`], interface `version`), ready once `/healthz` answers.
pub fn pool_manifest(name: &str, runtime_image: &str, size: i32, version: i32) -> String {
    format!(
        "apiVersion: kinetic.dev/v1alpha1
kind: PodPool
metadata:
  name: {name}
spec:
  minReady: {size}
  maxReady: {size}
  specializationTimeoutSeconds: 30
  code:
    volume: userfunc
    port: {PORT}
    version: {version}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: runtime
        image: {runtime_image}
        ports:
        - containerPort: {PORT}
        readinessProbe:
          httpGet:
            path: /healthz
            port: {PORT}
          periodSeconds: 1
        volumeMounts:
        - name: userfunc
          mountPath: /userfunc
      volumes:
      - name: userfunc
        emptyDir: {{}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layers run: unpacked into a directory, the interpreter imports `bigdep` under
    /// `chroot` (as root) and the runtime's source compiles.
    #[test]
    fn the_interpreter_and_runtime_layers_import_bigdep_in_a_chroot() {
        let dir = tempfile::tempdir().unwrap();
        for tar in [
            crate::images::busybox_tar().unwrap(),
            interpreter_tar().unwrap(),
            runtime_tar().unwrap(),
        ] {
            tar::Archive::new(&tar[..]).unpack(dir.path()).unwrap();
        }
        let out = std::process::Command::new("chroot")
            .arg(dir.path())
            .args([PYTHON, "-c", "import sys, time; sys.path.insert(0, '/runtime/lib'); t = time.perf_counter(); import bigdep, http.server, json; print(bigdep.MODULES, round(time.perf_counter() - t, 3))"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!("import bigdep: {text}");
        assert!(text.starts_with(&format!("{BIGDEP_MODULES} ")), "{text}");
    }
}
