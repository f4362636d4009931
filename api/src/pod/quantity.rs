//! Kubernetes quantities: CPUs (`250m`, `0.5`) and bytes (`64Mi`, `1G`, `129e6`).

use super::{bad, PodSpecError, Quantity};

/// CPU quantity → millicpus: `250m`, `0.5`, `2`.
pub fn parse_cpu(field: &str, q: &Quantity) -> Result<u64, PodSpecError> {
    let text = q.to_string();
    let t = text.trim();
    let (num, scale) = match t.strip_suffix('m') {
        Some(n) => (n, 1.0),
        None => (t, 1000.0),
    };
    let v: f64 = num.parse().map_err(|_| {
        bad(
            field,
            format!("invalid cpu quantity {text:?} (want 250m, 0.5 or 2)"),
        )
    })?;
    if !v.is_finite() || v <= 0.0 || v * scale > 1e9 {
        return Err(bad(field, format!("cpu quantity {text:?} out of range")));
    }
    Ok(((v * scale).round() as u64).max(1))
}

/// Memory quantity → bytes: `128974848`, `129e6`, `129M`, `123Mi`.
pub fn parse_memory(field: &str, q: &Quantity) -> Result<i64, PodSpecError> {
    let text = q.to_string();
    let t = text.trim();
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (num, scale) = SUFFIXES
        .iter()
        .find_map(|(s, m)| t.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((t, 1.0));
    let v: f64 = num.parse().map_err(|_| {
        bad(
            field,
            format!("invalid memory quantity {text:?} (want 64Mi, 1G or bytes)"),
        )
    })?;
    let bytes = v * scale;
    if !bytes.is_finite() || bytes < 4096.0 || bytes >= i64::MAX as f64 {
        return Err(bad(
            field,
            format!("memory quantity {text:?} out of range (at least 4Ki)"),
        ));
    }
    Ok(bytes as i64)
}
