//! Reading and writing topology files: JSON in, errors naming the file, the field's JSON path and the value.

use std::path::{Path, PathBuf};

use super::{Topology, TopologyError};

/// Reads, parses and validates a topology file.
pub fn load(path: impl AsRef<Path>) -> Result<Topology, TopologyError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
        file: file.clone(),
        source,
    })?;
    let topo = parse(&text, &file)?;
    topo.validate_named(&file)?;
    Ok(topo)
}

/// Parses topology JSON (no validation); `file` only labels errors.
pub fn parse(text: &str, file: &str) -> Result<Topology, TopologyError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        TopologyError::Parse {
            file: file.to_owned(),
            field,
            message: e.into_inner().to_string(),
        }
    })
}

/// Writes a topology as pretty JSON.
pub fn save(topo: &Topology, path: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut text = serde_json::to_string_pretty(topo)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Resolves a topology argument: a path to load, or an already-built topology.
#[derive(Debug, Clone)]
pub enum TopologySource {
    File(PathBuf),
    Inline(Topology),
}

impl From<&Path> for TopologySource {
    fn from(p: &Path) -> Self {
        TopologySource::File(p.to_owned())
    }
}
impl From<PathBuf> for TopologySource {
    fn from(p: PathBuf) -> Self {
        TopologySource::File(p)
    }
}
impl From<&str> for TopologySource {
    fn from(p: &str) -> Self {
        TopologySource::File(PathBuf::from(p))
    }
}
impl From<Topology> for TopologySource {
    fn from(t: Topology) -> Self {
        TopologySource::Inline(t)
    }
}
impl From<&Topology> for TopologySource {
    fn from(t: &Topology) -> Self {
        TopologySource::Inline(t.clone())
    }
}
