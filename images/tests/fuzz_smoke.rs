//! Smoke mode of the cargo-fuzz targets (`fuzz/`): each entry point runs over seed inputs
//! and a few thousand deterministic mutations of them. Any panic (including an entry's
//! own "wrote outside its root" check) fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use berth_images::fuzzing;
use berth_integration::tarball::{Compression, Meta, TarBuilder};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(data.len() + 1);
                data.insert(i, rng.next() as u8);
            }
            2 if !data.is_empty() => {
                let len = rng.below(data.len());
                data.truncate(len);
            }
            3 if !data.is_empty() => {
                let i = rng.below(data.len());
                let interesting = [0u8, 0xff, b'/', b'.', b':', b'@', b'"', b'{'];
                data[i] = interesting[rng.below(interesting.len())];
            }
            _ if data.len() > 2 => {
                let a = rng.below(data.len());
                let b = (a + rng.below(64)).min(data.len());
                let chunk = data[a..b].to_vec();
                let at = rng.below(data.len());
                data.splice(at..at, chunk);
            }
            _ => {}
        }
    }
    data
}

fn run(seeds: &[Vec<u8>], iterations: usize, mut target: impl FnMut(&[u8])) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in seeds {
        target(seed);
    }
    for _ in 0..iterations {
        let seed = &seeds[rng.below(seeds.len())];
        target(&mutate(&mut rng, seed));
    }
}

#[test]
fn reference_parser() {
    let seeds: Vec<Vec<u8>> = [
        "busybox",
        "docker.io/library/busybox:latest",
        "127.0.0.1:5000/a/b:v1",
        "host:5000/repo@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "repo:tag@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "[::1]:5000/x",
        "a/b/c/d/e:f",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    run(&seeds, 20_000, fuzzing::reference);
}

#[test]
fn manifest_parser() {
    let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let seeds: Vec<Vec<u8>> = [
        format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{hex}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{hex}","size":3}}]}}"#),
        format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:{hex}","size":1,"platform":{{"os":"linux","architecture":"amd64","variant":"v2"}}}}]}}"#),
        format!(r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{hex}"]}}}}"#),
        r#"{"schemaVersion":1}"#.to_string(),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    run(&seeds, 5_000, fuzzing::manifest);
}

#[test]
fn tar_unpacker() {
    let scratch = tempfile::tempdir().unwrap();
    let mut seeds = Vec::new();
    let mut t = TarBuilder::new();
    t.dir("d", Meta::DIR).unwrap();
    t.file("d/f", b"hello", Meta::FILE).unwrap();
    t.hardlink("d/h", "d/f").unwrap();
    t.symlink("s", "/d").unwrap();
    t.file("s/through", b"x", Meta::FILE).unwrap();
    t.file("d/.wh.gone", b"", Meta::FILE).unwrap();
    t.file("d/.wh..wh..opq", b"", Meta::FILE).unwrap();
    t.fifo("p", Meta::FILE).unwrap();
    t.file("d", b"a file replacing the directory", Meta::FILE)
        .unwrap();
    t.file(
        "d/after",
        b"must not land in the removed directory",
        Meta::FILE,
    )
    .unwrap();
    let plain = t.finish().unwrap();
    let mut t = TarBuilder::new();
    t.symlink("up", "../../../../").unwrap();
    t.file("up/escape", b"x", Meta::FILE).unwrap();
    t.hardlink("h", "../../x").unwrap();
    t.file("../dotdot", b"x", Meta::FILE).unwrap();
    let hostile = t.finish().unwrap();
    seeds.push(Compression::Gzip.compress(&plain).unwrap());
    seeds.push(Compression::Zstd.compress(&plain).unwrap());
    seeds.push(plain);
    seeds.push(hostile);
    run(&seeds, 400, |data| fuzzing::unpack(data, scratch.path()));
}
