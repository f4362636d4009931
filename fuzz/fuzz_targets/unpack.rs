#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = std::env::temp_dir().join(format!("berth-fuzz-unpack-{}", std::process::id()));
    berth_images::fuzzing::unpack(data, &scratch);
});
