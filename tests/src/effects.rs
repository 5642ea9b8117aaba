//! What `idem-test-worker many` processes report: executions and received values per key, and
//! the exactly-once check every multi-process test makes of them.

use std::collections::HashMap;
use std::path::PathBuf;

/// The workers' output files, read back.
#[derive(Debug, Default)]
pub struct Effects {
    /// Every execution's value, per key.
    pub execs: HashMap<u32, Vec<String>>,
    /// Every (key, value) a caller received.
    pub gots: Vec<(u32, String)>,
}

impl Effects {
    /// Reads the `exec KEY VALUE` and `got KEY VALUE` lines of the workers' files.
    pub fn read(files: &[PathBuf]) -> Self {
        let mut effects = Self::default();
        for f in files {
            for line in std::fs::read_to_string(f).expect("worker output").lines() {
                let mut parts = line.split(' ');
                let (Some(kind), Some(key), Some(value)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    panic!("bad line {line:?}");
                };
                let key: u32 = key.parse().expect("numeric key");
                match kind {
                    "exec" => effects.execs.entry(key).or_default().push(value.to_owned()),
                    "got" => effects.gots.push((key, value.to_owned())),
                    other => panic!("bad line kind {other}"),
                }
            }
        }
        effects
    }

    /// Each of `keys` keys executed exactly once in total, and each of `processes` processes
    /// received, for every key, the value of that one execution.
    pub fn assert_exactly_once(&self, keys: usize, processes: usize) {
        assert_eq!(self.execs.len(), keys, "every key executed");
        for (key, values) in &self.execs {
            assert_eq!(values.len(), 1, "key {key} executed {} times", values.len());
        }
        assert_eq!(
            self.gots.len(),
            processes * keys,
            "every process received every key"
        );
        for (key, value) in &self.gots {
            assert_eq!(
                &self.execs[key][0], value,
                "key {key}: a caller received another value"
            );
        }
    }
}
