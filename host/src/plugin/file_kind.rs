//! What a plugin file holds when it is not a component: said in words before the compiler
//! reports a bad magic number as a byte array.

/// `\0asm`, the start of every WebAssembly binary.
const WASM_MAGIC: &[u8] = b"\0asm";
/// The version bytes of a core module (version 1).
const CORE_MODULE: &[u8] = &[0x01, 0x00, 0x00, 0x00];

/// Why `bytes` cannot be a component, with what to do, or `None` when they look like one (the
/// compiler then has the last word).
pub fn not_a_component(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return Some("the file is empty (a copy still under way?)".into());
    }
    if let Some(version) = bytes.strip_prefix(WASM_MAGIC) {
        if version.starts_with(CORE_MODULE) {
            return Some(
                "it is a core WebAssembly module, not a component: build for wasm32-wasip2 (Rust), or wrap the module with `evhost componentize` (C and other languages)"
                    .into(),
            );
        }
        return None;
    }
    let kind = if bytes.starts_with(b"\x7fELF") {
        "a native executable or library (ELF)".to_string()
    } else if bytes.starts_with(b"PK\x03\x04") {
        "a zip archive".to_string()
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        "a gzip archive".to_string()
    } else if let Ok(text) = std::str::from_utf8(&bytes[..bytes.len().min(64)]) {
        let first_line: String = text
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(40)
            .collect();
        format!("a text file starting with {first_line:?}")
    } else {
        let start: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!(
            "not WebAssembly (it starts with the bytes {})",
            start.join(" ")
        )
    };
    Some(format!(
        "it is {kind}, not a WebAssembly component (those start with \\0asm)"
    ))
}

#[cfg(test)]
mod tests {
    use super::not_a_component;

    #[test]
    fn says_what_a_file_is() {
        assert!(not_a_component(b"").is_some_and(|why| why.contains("empty")));
        let core = not_a_component(b"\0asm\x01\x00\x00\x00").expect("core module");
        assert!(core.contains("core WebAssembly module") && core.contains("componentize"));
        assert_eq!(not_a_component(b"\0asm\x0d\x00\x01\x00"), None);
        let text = not_a_component(b"hello, not wasm\n").expect("text");
        assert!(
            text.contains("a text file starting with \"hello, not wasm\""),
            "{text}"
        );
        assert!(not_a_component(b"\x7fELF\x02").is_some_and(|why| why.contains("ELF")));
        assert!(
            not_a_component(&[0xff, 0xfe, 0x00, 0x01])
                .is_some_and(|why| why.contains("ff fe 00 01"))
        );
    }
}
