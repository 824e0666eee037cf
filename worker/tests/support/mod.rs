//! Test registry and images for the docker agent's integration tests: a real
//! `docker-registry` (distribution 2.8) on a free loopback port, fed OCI layouts built here
//! and pushed with `skopeo`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

#[path = "tar.rs"]
mod tar_builder;
pub use tar_builder::{MTIME, Tar};

/// A registry process, killed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// Its storage root.
    pub storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; with `htpasswd = Some((user, password))` it demands Basic auth.
    pub fn start(htpasswd: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some((user, password)) = htpasswd {
            let out = Command::new("htpasswd").args(["-Bbn", user, password]).output().unwrap();
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).unwrap();
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n", file.display()));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed");
        let registry = Self {
            child,
            addr,
            storage,
            _dir: dir,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(&self.addr) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut head = [0u8; 12];
                if s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("registry at {} did not answer /v2/ within 10 s", self.addr);
    }

    /// Pushes an OCI layout's tag to `<addr>/<name>:<tag>`, all platforms of an index.
    pub fn push(&self, layout: &Path, tag: &str, name: &str, creds: Option<(&str, &str)>) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--all", "--quiet", "--dest-tls-verify=false"]);
        if let Some((u, p)) = creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name}:{tag}", self.addr));
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The file holding a blob in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A content descriptor in an OCI layout.
#[derive(Clone, Debug)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: usize,
}

impl Desc {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// An OCI image layout being written.
pub struct Layout {
    pub dir: PathBuf,
    tags: Vec<(String, Desc)>,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Self {
            dir: dir.to_path_buf(),
            tags: Vec::new(),
        }
    }

    pub fn blob(&self, bytes: &[u8], media_type: &str) -> Desc {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        Desc {
            media_type: media_type.to_owned(),
            digest: format!("sha256:{hex}"),
            size: bytes.len(),
        }
    }

    pub fn gzip_layer(&self, tar: &[u8]) -> Desc {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(tar).unwrap();
        self.blob(&gz.finish().unwrap(), "application/vnd.oci.image.layer.v1.tar+gzip")
    }

    pub fn zstd_layer(&self, tar: &[u8]) -> Desc {
        self.blob(&zstd::encode_all(tar, 3).unwrap(), "application/vnd.oci.image.layer.v1.tar+zstd")
    }

    pub fn plain_layer(&self, tar: &[u8]) -> Desc {
        self.blob(tar, "application/vnd.oci.image.layer.v1.tar")
    }

    /// An image manifest over `layers` with a config for `arch`.
    pub fn image(&self, arch: &str, layers: &[Desc], run_config: serde_json::Value) -> Desc {
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": run_config,
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let config = self.blob(
            &serde_json::to_vec(&config).unwrap(),
            "application/vnd.oci.image.config.v1+json",
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.json(),
            "layers": layers.iter().map(Desc::json).collect::<Vec<_>>(),
        });
        self.blob(
            &serde_json::to_vec(&manifest).unwrap(),
            "application/vnd.oci.image.manifest.v1+json",
        )
    }

    /// An image index over `(manifest, arch, variant)` entries.
    pub fn index(&self, entries: &[(Desc, &str, Option<&str>)]) -> Desc {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(d, arch, variant)| {
                let mut j = d.json();
                let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = serde_json::json!(v);
                }
                j["platform"] = platform;
                j
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.blob(&serde_json::to_vec(&index).unwrap(), "application/vnd.oci.image.index.v1+json")
    }

    /// Tags `desc` and rewrites `index.json`.
    pub fn tag(&mut self, tag: &str, desc: Desc) {
        self.tags.push((tag.to_owned(), desc));
        let manifests: Vec<_> = self
            .tags
            .iter()
            .map(|(t, d)| {
                let mut j = d.json();
                j["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": t});
                j
            })
            .collect();
        let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}
