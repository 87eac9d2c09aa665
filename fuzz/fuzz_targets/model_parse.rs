//! `Model::parse` on arbitrary text: no panic; an error names the file and a line inside the
//! text; a model that parses survives what `fum check` computes from it.
//!
//! RUSTC_BOOTSTRAP=1 cargo fuzz run -s none model_parse fuzz/corpus/model_parse fuzz/seeds/model_parse \
//!     -- -dict=fuzz/model.dict -max_len=8192
#![no_main]

use fum::Model;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const PATH: &str = "fuzzed/model.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Model::parse(text, Path::new(PATH)) {
        Ok(mut model) => {
            model.revalidate().expect("a parsed model revalidates");
            // What `fum check` prints.
            for p in &model.spec.projections {
                let n = model.expected_synapses_of(p);
                assert!(n.is_finite() && n >= 0.0, "projection {}: ~{n} synapses", p.name);
            }
            std::hint::black_box((model.expected_synapses(), model.steps(), model.hash()));
        }
        Err(e) => {
            let msg = e.to_string();
            let rest = msg.strip_prefix(PATH).and_then(|r| r.strip_prefix(':')).unwrap_or_else(|| panic!("no path: {msg}"));
            let mut parts = rest.splitn(3, ':');
            let line: usize = parts.next().and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("no line: {msg}"));
            let column: usize = parts.next().and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no column: {msg}"));
            let lines = text.matches('\n').count() + 1;
            assert!((1..=lines).contains(&line) && column >= 1, "line {line} column {column} outside {lines} lines: {msg}");
        }
    }
});
