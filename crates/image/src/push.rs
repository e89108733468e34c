//! Building images and uploading them to a registry: the push half of the distribution API
//! (monolithic `POST` + `PUT` uploads, manifest `PUT`).
//!
//! Used by the test fixtures to make images the tests pull, and later by
//! `kinetic image convert`. Layers are built in memory, so this is for small and medium images.

use std::io::Write as _;
use std::path::Path;

use bytes::Bytes;
use http::Method;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};

use crate::client::{Session, Transport};
pub use crate::manifest::Compression;
use crate::manifest::{self, ConfigFile, Descriptor, Platform, RootFs, RuntimeConfig};
use crate::reference::Reference;
use crate::{Error, ImageConfig, PullOptions, Result, digest};

/// Which family of media types an image uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Oci,
    /// Docker schema2 (`application/vnd.docker.distribution.manifest.v2+json`).
    Docker,
}

/// A compressed layer blob with its descriptors.
#[derive(Clone, Debug)]
pub struct Layer {
    pub media_type: String,
    /// Digest of the blob (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    pub data: Bytes,
}

impl Layer {
    /// Compresses a tar stream into a layer.
    ///
    /// # Errors
    /// Docker schema2 has no zstd layer type, or compression failed.
    pub fn from_tar(tar: &[u8], compression: Compression, format: Format) -> Result<Layer> {
        let media_type = match (format, compression) {
            (Format::Oci, Compression::None) => manifest::OCI_LAYER_TAR,
            (Format::Oci, Compression::Gzip) => manifest::OCI_LAYER_GZIP,
            (Format::Oci, Compression::Zstd) => manifest::OCI_LAYER_ZSTD,
            (Format::Docker, Compression::None) => manifest::DOCKER_LAYER_TAR,
            (Format::Docker, Compression::Gzip) => manifest::DOCKER_LAYER_GZIP,
            (Format::Docker, Compression::Zstd) => {
                return Err(Error::UnsupportedMediaType {
                    media_type: "zstd layer in a Docker schema2 image".to_owned(),
                    digest: digest::sha256(tar),
                });
            }
        };
        let err = |source| Error::Io { op: "compressing a layer", path: "<memory>".into(), source };
        let data = match compression {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(tar).map_err(err)?;
                gz.finish().map_err(err)?
            }
            Compression::Zstd => zstd::encode_all(tar, 3).map_err(err)?,
        };
        Ok(Layer {
            media_type: media_type.to_owned(),
            digest: digest::sha256(&data),
            diff_id: digest::sha256(tar),
            data: Bytes::from(data),
        })
    }

    /// A layer holding the contents of `dir` (as its root), with owners, modes and mtimes.
    ///
    /// # Errors
    /// `dir` cannot be read.
    pub fn from_dir(dir: &Path, compression: Compression, format: Format) -> Result<Layer> {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Complete);
        let err = |source| Error::Io { op: "archiving", path: dir.to_path_buf(), source };
        b.append_dir_all(".", dir).map_err(err)?;
        let tar = b.into_inner().map_err(err)?;
        Layer::from_tar(&tar, compression, format)
    }
}

/// Builds a layer's tar in memory, entry by entry, with fixed mtimes so equal content gives
/// equal digests.
pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder::new()
    }
}

fn tar_err(path: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { op: "adding to a tar", path: path.into(), source }
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder { b: tar::Builder::new(Vec::new()), mtime: 1_700_000_000 }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h
    }

    /// Sets the mtime of the entries added from now on.
    pub fn mtime(&mut self, mtime: u64) -> &mut Self {
        self.mtime = mtime;
        self
    }

    /// # Errors
    /// The path is not representable in a tar header.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        let mut h = self.header(tar::EntryType::Directory, mode, 0);
        self.b.append_data(&mut h, path, std::io::empty()).map_err(tar_err(path))?;
        Ok(self)
    }

    /// # Errors
    /// The path is not representable in a tar header.
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<&mut Self> {
        self.file_owned(path, data, mode, 0, 0)
    }

    /// # Errors
    /// The path is not representable in a tar header.
    pub fn file_owned(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Result<&mut Self> {
        let mut h = self.header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.b.append_data(&mut h, path, data).map_err(tar_err(path))?;
        Ok(self)
    }

    /// # Errors
    /// The path is not representable in a tar header.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let mut h = self.header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, path, target).map_err(tar_err(path))?;
        Ok(self)
    }

    /// A hard link at `path` to the earlier entry `target` (a path inside the layer).
    ///
    /// # Errors
    /// The path is not representable in a tar header.
    pub fn hardlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let mut h = self.header(tar::EntryType::Link, 0o644, 0);
        self.b.append_link(&mut h, path, target).map_err(tar_err(path))?;
        Ok(self)
    }

    /// An OCI whiteout deleting `path` from the layers below.
    ///
    /// # Errors
    /// The path is not representable in a tar header.
    pub fn whiteout(&mut self, path: &str) -> Result<&mut Self> {
        let (dir, name) = match path.trim_end_matches('/').rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        let wh = format!("{dir}.wh.{name}");
        self.file(&wh, b"", 0o644)
    }

    /// An opaque-directory marker: `dir` hides everything the layers below have in it.
    ///
    /// # Errors
    /// The path is not representable in a tar header.
    pub fn opaque(&mut self, dir: &str) -> Result<&mut Self> {
        let p = format!("{}/.wh..wh..opq", dir.trim_end_matches('/'));
        self.file(&p, b"", 0o644)
    }

    /// Copies a host file into the layer at `path`, keeping its mode.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn host_file(&mut self, path: &str, host: &Path) -> Result<&mut Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |source| Error::Io { op: "reading", path: host.to_path_buf(), source };
        let data = std::fs::read(host).map_err(io)?;
        let mode = std::fs::metadata(host).map_err(io)?.permissions().mode() & 0o7777;
        self.file(path, &data, mode)
    }

    /// The finished tar stream.
    ///
    /// # Errors
    /// Writing the end-of-archive blocks failed (it does not, in memory).
    pub fn finish(self) -> Result<Vec<u8>> {
        self.b.into_inner().map_err(tar_err("<end of archive>"))
    }
}

/// An image to push: layers bottom first, and the runtime configuration.
#[derive(Clone, Debug, Default)]
pub struct ImageSpec {
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    pub format: Format,
    /// `amd64` when empty.
    pub architecture: String,
    /// `linux` when empty.
    pub os: String,
}

/// What a push stored: the manifest's descriptor.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// Uploads to one repository.
pub struct Pusher {
    session: Session,
    reference: Reference,
}

impl Pusher {
    /// A pusher for the repository of `reference` (its tag is where [`Pusher::push_image`]
    /// puts the manifest).
    ///
    /// # Errors
    /// The reference does not parse.
    pub fn new(reference: &str, opts: &PullOptions) -> Result<Pusher> {
        let reference = Reference::parse(reference)?;
        let session = Session::new(
            &Transport::default(),
            &reference,
            &opts.credentials,
            &opts.insecure_registries,
            true,
        );
        Ok(Pusher { session, reference })
    }

    fn wrap(&self, e: Error) -> Error {
        Error::Push { reference: self.reference.to_string(), source: Box::new(e) }
    }

    /// Uploads a blob unless the registry has it; returns its digest.
    ///
    /// # Errors
    /// The registry refused the upload.
    pub async fn push_blob(&self, data: Bytes) -> Result<String> {
        self.push_blob_inner(data).await.map_err(|e| self.wrap(e))
    }

    async fn push_blob_inner(&self, data: Bytes) -> Result<String> {
        let d = digest::sha256(&data);
        let head = self
            .session
            .send(Method::HEAD, &self.session.url(&format!("blobs/{d}")), &[], Bytes::new())
            .await?;
        if head.response.status().is_success() {
            return Ok(d);
        }
        let start = self
            .session
            .send(Method::POST, &self.session.url("blobs/uploads/"), &[], Bytes::new())
            .await?;
        let start = self.session.check(start, "POST", "blob upload").await?;
        let location =
            start.response.headers().get(LOCATION).and_then(|l| l.to_str().ok()).ok_or_else(
                || Error::Status {
                    method: "POST".to_owned(),
                    url: start.url.clone(),
                    status: start.response.status().as_u16(),
                    detail: ": no Location header for the upload".to_owned(),
                },
            )?;
        let base: http::Uri =
            start.url.parse().map_err(|_| Error::InvalidUrl { url: start.url.clone() })?;
        let mut url = crate::client::resolve(&base, location);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&crate::client::encode_query(&[("digest", &d)]));
        let len = data.len().to_string();
        let put = self
            .session
            .send(
                Method::PUT,
                &url,
                &[(CONTENT_TYPE, "application/octet-stream"), (CONTENT_LENGTH, &len)],
                data,
            )
            .await?;
        self.session.check(put, "PUT", &format!("blob {d}")).await?;
        Ok(d)
    }

    /// PUTs a manifest (or index) under `tag_or_digest`; returns its digest.
    ///
    /// # Errors
    /// The registry refused it.
    pub async fn push_manifest(
        &self,
        tag_or_digest: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<Pushed> {
        let d = digest::sha256(&body);
        let size = body.len() as u64;
        let url = self.session.url(&format!("manifests/{tag_or_digest}"));
        let put = self
            .session
            .send(Method::PUT, &url, &[(CONTENT_TYPE, media_type)], body)
            .await
            .map_err(|e| self.wrap(e))?;
        self.session
            .check(put, "PUT", &format!("manifest {tag_or_digest}"))
            .await
            .map_err(|e| self.wrap(e))?;
        Ok(Pushed { digest: d, size, media_type: media_type.to_owned() })
    }

    /// Uploads the layers and config of `image` and its manifest, tagged with the reference's
    /// tag (or only by digest when it has none).
    ///
    /// # Errors
    /// An upload failed.
    pub async fn push_image(&self, image: &ImageSpec) -> Result<Pushed> {
        let (config_type, manifest_type) = match image.format {
            Format::Oci => (manifest::OCI_CONFIG, manifest::OCI_MANIFEST),
            Format::Docker => (manifest::DOCKER_CONFIG, manifest::DOCKER_MANIFEST),
        };
        let c = &image.config;
        let config = ConfigFile {
            architecture: or(&image.architecture, "amd64"),
            os: or(&image.os, "linux"),
            config: Some(RuntimeConfig {
                user: c.user.clone(),
                env: Some(c.env.clone()),
                entrypoint: (!c.entrypoint.is_empty()).then(|| c.entrypoint.clone()),
                cmd: (!c.cmd.is_empty()).then(|| c.cmd.clone()),
                working_dir: c.working_dir.clone(),
                exposed_ports: None,
                labels: (!c.labels.is_empty()).then(|| c.labels.clone()),
                stop_signal: c.stop_signal.clone(),
            }),
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
            },
            created: Some("2023-11-14T22:13:20Z".to_owned()),
        };
        let config_bytes = Bytes::from(
            serde_json::to_vec(&config)
                .map_err(|source| Error::Json { what: "image config".to_owned(), source })?,
        );
        let config_desc = Descriptor {
            media_type: config_type.to_owned(),
            digest: digest::sha256(&config_bytes),
            size: config_bytes.len() as u64,
            platform: None,
            annotations: None,
        };
        let uploads = image.layers.iter().map(|l| self.push_blob(l.data.clone()));
        futures::future::try_join_all(uploads).await?;
        self.push_blob(config_bytes).await?;
        let m = manifest::Manifest {
            schema_version: 2,
            media_type: Some(manifest_type.to_owned()),
            config: config_desc,
            layers: image
                .layers
                .iter()
                .map(|l| Descriptor {
                    media_type: l.media_type.clone(),
                    digest: l.digest.clone(),
                    size: l.data.len() as u64,
                    platform: None,
                    annotations: None,
                })
                .collect(),
        };
        let body = Bytes::from(
            serde_json::to_vec(&m)
                .map_err(|source| Error::Json { what: "image manifest".to_owned(), source })?,
        );
        let target = self.target(&body);
        self.push_manifest(&target, manifest_type, body).await
    }

    /// Pushes an index (OCI) or manifest list (Docker) of already pushed manifests.
    ///
    /// # Errors
    /// The upload failed.
    pub async fn push_index(
        &self,
        manifests: &[(Pushed, Platform)],
        format: Format,
    ) -> Result<Pushed> {
        let media_type = match format {
            Format::Oci => manifest::OCI_INDEX,
            Format::Docker => manifest::DOCKER_LIST,
        };
        let index = manifest::Index {
            schema_version: 2,
            media_type: Some(media_type.to_owned()),
            manifests: manifests
                .iter()
                .map(|(p, plat)| Descriptor {
                    media_type: p.media_type.clone(),
                    digest: p.digest.clone(),
                    size: p.size,
                    platform: Some(plat.clone()),
                    annotations: None,
                })
                .collect(),
        };
        let body = Bytes::from(
            serde_json::to_vec(&index)
                .map_err(|source| Error::Json { what: "image index".to_owned(), source })?,
        );
        let target = self.target(&body);
        self.push_manifest(&target, media_type, body).await
    }

    fn target(&self, body: &[u8]) -> String {
        self.reference.tag.clone().unwrap_or_else(|| digest::sha256(body))
    }
}

fn or(s: &str, default: &str) -> String {
    if s.is_empty() { default.to_owned() } else { s.to_owned() }
}

/// Pushes `image` to `reference`; returns the manifest digest.
///
/// # Errors
/// See [`Pusher::push_image`].
pub async fn push_image(reference: &str, image: &ImageSpec, opts: &PullOptions) -> Result<String> {
    Ok(Pusher::new(reference, opts)?.push_image(image).await?.digest)
}

/// The tar of a directory as an OCI layer, reading overlayfs's forms as a layer diff (what
/// containerd's `archive.WriteDiff` does for an overlay upper directory): a 0/0 character device
/// becomes the whiteout `.wh.NAME`, a directory with `trusted.overlay.opaque=y` gets a
/// `.wh..wh..opq` entry, hard links inside the directory stay links. Owners, modes and mtimes
/// are kept; entries are sorted by name, so equal trees give equal tars.
///
/// Builds the tar in memory, so it is for images that fit (the benchmark's ≈ 1 GB ones do).
///
/// # Errors
/// The directory cannot be read.
pub fn tar_layer_dir(dir: &Path) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let mut links = std::collections::HashMap::new();
    walk(&mut b, dir, Path::new(""), &mut links)?;
    b.into_inner().map_err(|source| Error::Io { op: "archiving", path: dir.to_path_buf(), source })
}

fn walk(
    b: &mut tar::Builder<Vec<u8>>,
    root: &Path,
    rel: &Path,
    links: &mut std::collections::HashMap<(u64, u64), std::path::PathBuf>,
) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let dir = root.join(rel);
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { op, path: p, source }
    };
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&dir)
        .map_err(io("listing", &dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(io("listing", &dir))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let entry = rel.join(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(io("stat", &path))?;
        let ft = meta.file_type();
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        let append_err = io("archiving", &path);
        if ft.is_char_device() && meta.rdev() == 0 {
            let mut wh = tar::Header::new_gnu();
            wh.set_entry_type(tar::EntryType::Regular);
            wh.set_size(0);
            wh.set_mode(0o644);
            wh.set_uid(0);
            wh.set_gid(0);
            wh.set_mtime(meta.mtime().max(0) as u64);
            let mut whname = std::ffi::OsString::from(".wh.");
            whname.push(&name);
            b.append_data(&mut wh, rel.join(whname), std::io::empty()).map_err(append_err)?;
        } else if ft.is_dir() {
            h.set_size(0);
            b.append_data(&mut h, &entry, std::io::empty()).map_err(append_err)?;
            let mut buf = [0u8; 4];
            if rustix::fs::lgetxattr(&path, "trusted.overlay.opaque", &mut buf)
                .is_ok_and(|n| &buf[..n] == b"y")
            {
                let mut o = tar::Header::new_gnu();
                o.set_entry_type(tar::EntryType::Regular);
                o.set_size(0);
                o.set_mode(0o644);
                o.set_uid(0);
                o.set_gid(0);
                o.set_mtime(meta.mtime().max(0) as u64);
                b.append_data(&mut o, entry.join(".wh..wh..opq"), std::io::empty())
                    .map_err(io("archiving", &path))?;
            }
            walk(b, root, &entry, links)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io("reading the link", &path))?;
            h.set_size(0);
            b.append_link(&mut h, &entry, target).map_err(append_err)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, &entry, first).map_err(append_err)?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), entry.clone());
            }
            let f = std::fs::File::open(&path).map_err(io("opening", &path))?;
            b.append_data(&mut h, &entry, f).map_err(append_err)?;
        } else {
            // Devices, fifos and sockets: no content.
            if ft.is_char_device() || ft.is_block_device() {
                h.set_entry_type(if ft.is_char_device() {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                let dev = meta.rdev();
                h.set_device_major(rustix::fs::major(dev)).map_err(io("archiving", &path))?;
                h.set_device_minor(rustix::fs::minor(dev)).map_err(io("archiving", &path))?;
            } else if ft.is_fifo() {
                h.set_entry_type(tar::EntryType::Fifo);
            } else {
                continue;
            }
            h.set_size(0);
            b.append_data(&mut h, &entry, std::io::empty()).map_err(append_err)?;
        }
    }
    Ok(())
}
