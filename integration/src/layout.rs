use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::tarball::Compression;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// An image before it is written: uncompressed layer tars and the runtime config.
#[derive(Clone, Debug)]
pub struct Image {
    pub layers: Vec<Vec<u8>>,
    /// The `config` object of the image config (Cmd, Env, WorkingDir, User, …).
    pub config: Value,
    pub architecture: String,
}

impl Image {
    pub fn new(layers: Vec<Vec<u8>>, config: Value) -> Self {
        Self {
            layers,
            config,
            architecture: "amd64".into(),
        }
    }

    pub fn diff_ids(&self) -> Vec<String> {
        self.layers
            .iter()
            .map(|l| format!("sha256:{}", sha256_hex(l)))
            .collect()
    }

    pub fn config_json(&self) -> Result<Vec<u8>> {
        let history: Vec<Value> = self
            .layers
            .iter()
            .map(|_| json!({"created_by": "berth-fixture"}))
            .collect();
        Ok(serde_json::to_vec(&json!({
            "architecture": self.architecture,
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": self.diff_ids()},
            "history": history,
        }))?)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` as a blob of the layout at `dir`; returns a descriptor.
pub fn write_blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Result<Value> {
    let hex = sha256_hex(bytes);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    fs::write(blobs.join(&hex), bytes)?;
    Ok(json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()}))
}

/// Writes an image's blobs; returns the manifest descriptor (with platform).
pub fn write_image_blobs(dir: &Path, image: &Image, compression: Compression) -> Result<Value> {
    let config = write_blob(dir, OCI_CONFIG, &image.config_json()?)?;
    let mut layers = Vec::new();
    for tar in &image.layers {
        layers.push(write_blob(
            dir,
            compression.oci_media_type(),
            &compression.compress(tar)?,
        )?);
    }
    let manifest =
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers});
    let mut desc = write_blob(dir, OCI_MANIFEST, &serde_json::to_vec(&manifest)?)?;
    desc["platform"] = json!({"os": "linux", "architecture": image.architecture});
    Ok(desc)
}

fn write_index(dir: &Path, manifests: Vec<Value>) -> Result<()> {
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

/// An OCI image layout holding each image under its `org.opencontainers.image.ref.name`.
pub fn write_oci_layout(
    dir: &Path,
    images: &[(&str, &Image)],
    compression: Compression,
) -> Result<()> {
    let mut manifests = Vec::new();
    for (name, image) in images {
        let mut desc = write_image_blobs(dir, image, compression)?;
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        manifests.push(desc);
    }
    write_index(dir, manifests)
}

/// An OCI layout whose entry `tag` is an index of several platforms' manifests.
pub fn write_oci_multiarch(
    dir: &Path,
    tag: &str,
    images: &[Image],
    compression: Compression,
) -> Result<()> {
    let mut manifests = Vec::new();
    for image in images {
        manifests.push(write_image_blobs(dir, image, compression)?);
    }
    let inner = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let mut desc = write_blob(dir, OCI_INDEX, &serde_json::to_vec(&inner)?)?;
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    write_index(dir, vec![desc])
}

/// A `docker save` archive (legacy layout: `<id>/layer.tar`, `<config>.json`, manifest.json).
pub fn write_docker_archive(path: &Path, images: &[(&str, &Image)]) -> Result<()> {
    let mut builder = tar::Builder::new(
        fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut manifest = Vec::new();
    let mut written = std::collections::BTreeSet::new();
    let add = |builder: &mut tar::Builder<fs::File>, name: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        builder.append_data(&mut h, name, data)?;
        Ok(())
    };
    for (tag, image) in images {
        let config = image.config_json()?;
        let config_name = format!("{}.json", sha256_hex(&config));
        if written.insert(config_name.clone()) {
            add(&mut builder, &config_name, &config)?;
        }
        let mut layers = Vec::new();
        for tar in &image.layers {
            let name = format!("{}/layer.tar", sha256_hex(tar));
            if written.insert(name.clone()) {
                add(&mut builder, &name, tar)?;
            }
            layers.push(name);
        }
        manifest.push(json!({"Config": config_name, "RepoTags": [tag], "Layers": layers}));
    }
    add(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&manifest)?,
    )?;
    builder.into_inner()?.sync_all()?;
    Ok(())
}

/// Packs a directory (an OCI layout) into a tar file, as `tar -C dir -cf out .` would.
pub fn tar_directory(dir: &Path, out: &Path) -> Result<()> {
    let mut builder = tar::Builder::new(fs::File::create(out)?);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()?.sync_all()?;
    Ok(())
}
