//! `kinetic image convert`: re-publishes an image with its layers in another compression
//! (zstd, gzip or none), keeping the image configuration byte for byte, so the config digest
//! and the `rootfs.diff_ids` (digests of the uncompressed tars) do not change. Only the layer
//! blobs and the manifest are new; the result is an OCI manifest (Docker schema2 has no zstd
//! layer type).
//!
//! Each layer is fetched whole into memory, verified against its digest, decompressed, checked
//! against its `diff_id`, recompressed and uploaded, one layer at a time; an image whose largest
//! layer is N bytes uncompressed needs about 1.5 N of memory.
//!
//! Also home to the codecs the store and the benchmark share: [`compress`] (gzip at zlib's
//! default level 6, as docker and containerd write layers; zstd at level 3, buildkit's default)
//! and [`decode_to_sink`] (the decoders the pull uses, for measuring their single-core rate).

use std::io::{self, Read, Write as _};

use bytes::Bytes;

use crate::client::{Session, Transport};
use crate::manifest::{self, Compression, ConfigFile, Descriptor, Index, Manifest};
use crate::push::Pusher;
use crate::reference::Reference;
use crate::store::{Kind, manifest_kind, pick_platform};
use crate::{Error, PullOptions, Result, digest};

/// gzip level of [`compress`] (zlib's default, what `docker push` and containerd write).
pub const GZIP_LEVEL: u32 = 6;
/// zstd level of [`compress`] (the default of zstd, buildkit and containerd).
pub const ZSTD_LEVEL: i32 = 3;

/// Compresses a layer tar into a blob of the given compression.
///
/// # Errors
/// The encoder failed (out of memory).
pub fn compress(tar: &[u8], to: Compression) -> io::Result<Vec<u8>> {
    match to {
        Compression::None => Ok(tar.to_vec()),
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(tar.len() / 3),
                flate2::Compression::new(GZIP_LEVEL),
            );
            gz.write_all(tar)?;
            gz.finish()
        }
        Compression::Zstd => zstd::bulk::compress(tar, ZSTD_LEVEL),
    }
}

/// Decompresses a whole layer blob into its tar.
///
/// # Errors
/// The blob is not valid data of that compression.
pub fn decompress(blob: &[u8], from: Compression) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(blob.len().saturating_mul(3));
    match from {
        Compression::None => out.extend_from_slice(blob),
        Compression::Gzip => {
            flate2::read::MultiGzDecoder::new(blob).read_to_end(&mut out)?;
        }
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(blob)?.read_to_end(&mut out)?;
        }
    }
    Ok(out)
}

/// Decodes `blob` with the decoder a pull uses for `from` and discards the output; returns the
/// number of decoded bytes. The benchmark times it for the decoder's single-core rate.
///
/// # Errors
/// The blob is not valid data of that compression.
pub fn decode_to_sink(blob: &[u8], from: Compression) -> io::Result<u64> {
    match from {
        Compression::None => Ok(blob.len() as u64),
        Compression::Gzip => {
            io::copy(&mut flate2::read::MultiGzDecoder::new(blob), &mut io::sink())
        }
        Compression::Zstd => {
            io::copy(&mut zstd::stream::read::Decoder::new(blob)?, &mut io::sink())
        }
    }
}

/// What an image reference resolves to at its registry (linux/amd64 for an index).
#[derive(Clone, Debug)]
pub struct Inspected {
    /// Digest of the platform manifest.
    pub digest: String,
    pub manifest: Manifest,
    /// The image configuration blob, verified.
    pub config: Bytes,
}

/// Resolves `reference` to its linux/amd64 manifest and config without fetching layers.
///
/// # Errors
/// As a pull: not found, unauthorized, digest mismatch, unsupported media types.
pub async fn inspect(reference: &str, opts: &PullOptions) -> Result<Inspected> {
    let r = Reference::parse(reference)?;
    let session = Session::new(
        &Transport::default(),
        &r,
        &opts.credentials,
        &opts.insecure_registries,
        false,
    );
    inspect_with(&session, &r)
        .await
        .map_err(|e| Error::Pull { reference: r.to_string(), source: Box::new(e) })
}

async fn inspect_with(session: &Session, r: &Reference) -> Result<Inspected> {
    let (bytes, ct) = session.get_manifest(r.manifest_ref()).await?;
    let mut digest = digest::sha256(&bytes);
    if let Some(want) = &r.digest
        && *want != digest
    {
        return Err(Error::DigestMismatch { expected: want.clone(), actual: digest });
    }
    let mut manifest_bytes = bytes;
    if manifest_kind(&manifest_bytes, ct.as_deref(), &digest)? == Kind::Index {
        let index: Index = parse(&manifest_bytes, &digest)?;
        let d = pick_platform(&index, r)?.clone();
        let (bytes, _) = session.get_manifest(&d.digest).await?;
        let actual = digest::sha256(&bytes);
        if actual != d.digest {
            return Err(Error::DigestMismatch { expected: d.digest, actual });
        }
        digest = actual;
        manifest_bytes = bytes;
    }
    let manifest: Manifest = parse(&manifest_bytes, &digest)?;
    let config = fetch_blob(session, &manifest.config).await?;
    Ok(Inspected { digest, manifest, config })
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], digest: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|source| Error::Json { what: format!("manifest {digest}"), source })
}

/// A whole blob, verified against its descriptor.
async fn fetch_blob(session: &Session, d: &Descriptor) -> Result<Bytes> {
    crate::reference::validate_digest(&d.digest).map_err(|_| Error::UnsupportedMediaType {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
    })?;
    let f = session.get_blob(&d.digest).await?;
    let limit = usize::try_from(d.size.saturating_add(1)).unwrap_or(usize::MAX);
    let bytes = crate::client::read_limited(f.response, &f.url, limit).await?;
    let actual = digest::sha256(&bytes);
    if actual != d.digest {
        return Err(Error::DigestMismatch { expected: d.digest.clone(), actual });
    }
    Ok(bytes)
}

/// One converted layer.
#[derive(Clone, Debug)]
pub struct ConvertedLayer {
    pub from: Descriptor,
    pub to: Descriptor,
    /// The uncompressed tar's digest (unchanged by the conversion).
    pub diff_id: String,
}

/// The result of [`convert`].
#[derive(Clone, Debug)]
pub struct Converted {
    /// Digest of the new manifest at the destination.
    pub digest: String,
    pub config_digest: String,
    pub layers: Vec<ConvertedLayer>,
}

/// Media type of an OCI layer of the given compression.
pub fn oci_layer_type(c: Compression) -> &'static str {
    match c {
        Compression::None => manifest::OCI_LAYER_TAR,
        Compression::Gzip => manifest::OCI_LAYER_GZIP,
        Compression::Zstd => manifest::OCI_LAYER_ZSTD,
    }
}

/// Copies the linux/amd64 image `src` to `dst` with every layer in compression `to`.
///
/// # Guarantees
/// The config blob is uploaded unchanged; each new layer decompresses to the tar whose digest
/// the config lists in `rootfs.diff_ids` (checked before the upload). The manifest is pushed
/// last, so `dst` names a complete image or nothing new.
///
/// # Errors
/// The source cannot be read or verified, a layer does not decompress to its `diff_id`, or
/// the destination refuses an upload.
pub async fn convert(
    src: &str,
    dst: &str,
    to: Compression,
    opts: &PullOptions,
) -> Result<Converted> {
    let r = Reference::parse(src)?;
    let session = Session::new(
        &Transport::default(),
        &r,
        &opts.credentials,
        &opts.insecure_registries,
        false,
    );
    let wrap = |e: Error| Error::Pull { reference: r.to_string(), source: Box::new(e) };
    let src_image = inspect_with(&session, &r).await.map_err(wrap)?;
    let config: ConfigFile = serde_json::from_slice(&src_image.config).map_err(|source| {
        Error::Json { what: format!("image config {}", src_image.manifest.config.digest), source }
    })?;
    let pusher = Pusher::new(dst, opts)?;
    let mut layers = Vec::new();
    for (i, l) in src_image.manifest.layers.iter().enumerate() {
        let from =
            Compression::of_layer(&l.media_type).ok_or_else(|| Error::UnsupportedMediaType {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
            })?;
        let blob = fetch_blob(&session, l).await.map_err(wrap)?;
        let digest_in = l.digest.clone();
        let expected_diff = config.rootfs.diff_ids.get(i).cloned();
        let (new_blob, diff_id) = tokio::task::spawn_blocking(move || {
            let unpack_err = |source| Error::Unpack { digest: digest_in.clone(), source };
            let tar = decompress(&blob, from).map_err(unpack_err)?;
            let diff_id = digest::sha256(&tar);
            if let Some(want) = expected_diff
                && want != diff_id
            {
                return Err(Error::DigestMismatch { expected: want, actual: diff_id });
            }
            let new_blob =
                if from == to { blob.to_vec() } else { compress(&tar, to).map_err(unpack_err)? };
            Ok((Bytes::from(new_blob), diff_id))
        })
        .await
        .map_err(|_| Error::Task { what: format!("converting layer {}", l.digest) })??;
        let size = new_blob.len() as u64;
        let new_digest = pusher.push_blob(new_blob).await?;
        tracing::info!(from = %l.digest, to = %new_digest, bytes = size, "layer converted");
        layers.push(ConvertedLayer {
            from: l.clone(),
            to: Descriptor {
                media_type: oci_layer_type(to).to_owned(),
                digest: new_digest,
                size,
                platform: None,
                annotations: l.annotations.clone(),
            },
            diff_id,
        });
    }
    pusher.push_blob(src_image.config.clone()).await?;
    let m = Manifest {
        schema_version: 2,
        media_type: Some(manifest::OCI_MANIFEST.to_owned()),
        config: Descriptor {
            media_type: manifest::OCI_CONFIG.to_owned(),
            ..src_image.manifest.config.clone()
        },
        layers: layers.iter().map(|l| l.to.clone()).collect(),
    };
    let body = Bytes::from(
        serde_json::to_vec(&m)
            .map_err(|source| Error::Json { what: "image manifest".to_owned(), source })?,
    );
    let dst_ref = Reference::parse(dst)?;
    let target = dst_ref.tag.clone().unwrap_or_else(|| digest::sha256(&body));
    let pushed = pusher.push_manifest(&target, manifest::OCI_MANIFEST, body).await?;
    Ok(Converted { digest: pushed.digest, config_digest: m.config.digest, layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compress_round_trips_every_format() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let blob = compress(&data, c).unwrap();
            if c != Compression::None {
                assert!(blob.len() < data.len() / 2, "{c:?} compresses");
            }
            assert_eq!(decompress(&blob, c).unwrap(), data, "{c:?}");
            assert_eq!(decode_to_sink(&blob, c).unwrap(), data.len() as u64, "{c:?}");
        }
        assert!(decompress(b"not gzip", Compression::Gzip).is_err());
    }
}
