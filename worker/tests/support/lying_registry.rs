//! A minimal registry (distribution spec pull endpoints only) that misbehaves on purpose:
//! it serves a layer whose bytes do not match its digest, or answers 503 to the first blob
//! requests. The real `docker-registry` of the shared fixtures does neither, and its storage
//! must not be tampered with.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the registry lies.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Layer bytes differ from the digest the manifest gives.
    CorruptLayer,
    /// The first `n` blob requests get `503 Service Unavailable`.
    FailFirstBlobs(usize),
}

/// A running lying registry serving one image, `<addr>/lie:latest`, with one layer.
pub struct LyingRegistry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// Digest of the layer.
    pub layer_digest: String,
    /// Blob requests answered so far (503s included).
    pub blob_requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LyingRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl LyingRegistry {
    /// Starts serving `layer` (a gzip or plain tar) as the only layer of `lie:latest`.
    pub async fn start(layer: Vec<u8>, behaviour: Behaviour) -> Self {
        let config = br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        let layer_digest = digest_of(&layer);
        let config_digest = digest_of(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
        }))
        .unwrap();
        let served_layer = match behaviour {
            Behaviour::CorruptLayer => {
                let mut bad = layer.clone();
                bad[layer.len() / 2] ^= 0xff;
                bad
            }
            Behaviour::FailFirstBlobs(_) => layer,
        };
        let blobs: HashMap<String, Vec<u8>> = HashMap::from([
            (config_digest, config),
            (layer_digest.clone(), served_layer),
        ]);
        let manifest_digest = digest_of(&manifest);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let blob_requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&blob_requests);
        let state = Arc::new((manifest, manifest_digest, blobs));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&state);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let (manifest, manifest_digest, blobs) = &*state;
                    let (status, ctype, body, digest): (&str, &str, Vec<u8>, Option<&str>) = if path
                        == "/v2/"
                    {
                        ("200 OK", "application/json", b"{}".to_vec(), None)
                    } else if path.starts_with("/v2/lie/manifests/") {
                        (
                            "200 OK",
                            "application/vnd.oci.image.manifest.v1+json",
                            manifest.clone(),
                            Some(manifest_digest),
                        )
                    } else if let Some(d) = path.strip_prefix("/v2/lie/blobs/") {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        match (behaviour, blobs.get(d)) {
                            (Behaviour::FailFirstBlobs(k), _) if n < k => (
                                "503 Service Unavailable",
                                "text/plain",
                                b"busy".to_vec(),
                                None,
                            ),
                            (_, Some(blob)) => {
                                ("200 OK", "application/octet-stream", blob.clone(), None)
                            }
                            (_, None) => (
                                "404 Not Found",
                                "application/json",
                                br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#
                                    .to_vec(),
                                None,
                            ),
                        }
                    } else {
                        (
                            "404 Not Found",
                            "application/json",
                            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}"#.to_vec(),
                            None,
                        )
                    };
                    let mut response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
                        body.len()
                    );
                    if let Some(d) = digest {
                        response.push_str(&format!("Docker-Content-Digest: {d}\r\n"));
                    }
                    response.push_str("\r\n");
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self {
            addr,
            layer_digest,
            blob_requests,
            task,
        }
    }
}
