//! Links the `berth` executable as non-PIE: every container's supervisor is this binary
//! re-executed, and a PIE's relocated read-only data (~600 KiB here) would be a private,
//! dirty copy in each of them; at a fixed address those pages stay shared with the file.
fn main() {
    println!("cargo:rustc-link-arg-bin=berth=-no-pie");
}
