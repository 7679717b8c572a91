//! Reading manifests: files, directories and stdin; YAML streams, JSON, and
//! `kind: List`.

use super::fast_yaml;
use anyhow::{Context, bail};
use serde_json::Value;
use serde_saphyr::Spanned;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where an object came from: `file#document` (1-based, empty documents
/// not counted), and the item of a `kind: List`; or, for an object read
/// from the API server, its path there (document 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub document: usize,
    pub item: Option<usize>,
    /// The line the document's object starts on, 1-based.
    pub line: usize,
    /// The file holds other documents too.
    pub one_of_several: bool,
}

impl Origin {
    /// An object read from the API server at `path`.
    pub fn api(path: String) -> Origin {
        Origin {
            file: path,
            document: 0,
            item: None,
            line: 1,
            one_of_several: false,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            return f.write_str(&self.file);
        }
        write!(f, "{}#{}", self.file, self.document)?;
        if let Some(item) = self.item {
            write!(f, ".items[{item}]")?;
        }
        Ok(())
    }
}

pub struct Manifest {
    pub origin: Origin,
    pub object: Value,
}

/// One file to read: a manifest file, or stdin.
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    /// The file's name in results and errors: `-` for stdin.
    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "-".to_string(),
            Input::File(path) => path.display().to_string(),
        }
    }

    pub fn read(&self) -> anyhow::Result<String> {
        match self {
            Input::Stdin => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read stdin")?;
                Ok(text)
            }
            Input::File(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// The files `paths` name, in order: directories are read recursively
/// (`*.yaml`, `*.yml`, `*.json`, sorted by name), `-` is stdin. A directory
/// that cannot be listed ends the list: its error comes with the files
/// before it, which are to be judged first, as they come first.
pub fn inputs(paths: &[PathBuf]) -> (Vec<Input>, Option<anyhow::Error>) {
    let mut inputs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            inputs.push(Input::Stdin);
        } else if path.is_dir() {
            match files_under(path) {
                Ok(files) => inputs.extend(files.into_iter().map(Input::File)),
                Err(e) => return (inputs, Some(e)),
            }
        } else {
            inputs.push(Input::File(path.clone()));
        }
    }
    (inputs, None)
}

fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read directory {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            // The listing tells each entry's type: a stat of every file
            // cost a tenth of a second over 10,000 files. A symbolic link
            // still needs one, to know what it leads to.
            let file_type = entry.file_type()?;
            if file_type.is_dir() || (file_type.is_symlink() && path.is_dir()) {
                pending.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

pub(super) fn parse(file: &str, text: &str, out: &mut Vec<Manifest>) -> anyhow::Result<()> {
    let documents: Vec<(usize, Value)> = if file.ends_with(".json") {
        let document =
            serde_json::from_str(text).with_context(|| format!("{file}: invalid JSON"))?;
        let blank = text.len() - text.trim_start_matches([' ', '\t', '\r', '\n']).len();
        let line = 1 + text[..blank].matches('\n').count();
        vec![(line, document)]
    } else if let Some(documents) = fast_yaml::documents(text) {
        documents
    } else {
        let documents: Vec<Spanned<Value>> = serde_saphyr::from_str_multiple(text)
            .with_context(|| format!("{file}: invalid YAML"))?;
        documents
            .into_iter()
            .map(|document| (document.referenced.line() as usize, document.value))
            .collect()
    };
    let one_of_several = documents.len() > 1;
    for (index, (line, document)) in documents.into_iter().enumerate() {
        let origin = Origin {
            file: file.to_string(),
            document: index + 1,
            item: None,
            line,
            one_of_several,
        };
        match document {
            Value::Null => {}
            Value::Object(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                let Some(Value::Array(items)) = map.get("items") else {
                    bail!("{origin}: a List without items");
                };
                for (item, object) in items.iter().enumerate() {
                    let origin = Origin {
                        item: Some(item),
                        ..origin.clone()
                    };
                    out.push(manifest(origin, object.clone())?);
                }
            }
            object => out.push(manifest(origin, object)?),
        }
    }
    Ok(())
}

fn manifest(origin: Origin, object: Value) -> anyhow::Result<Manifest> {
    let well_formed = object.is_object()
        && object.get("apiVersion").is_some_and(Value::is_string)
        && object.get("kind").is_some_and(Value::is_string);
    if !well_formed {
        bail!("{origin}: not a Kubernetes object (a mapping with apiVersion and kind)");
    }
    Ok(Manifest { origin, object })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_streams_lists_and_empty_documents() {
        let mut out = Vec::new();
        let text = "---\napiVersion: v1\nkind: Pod\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap}\n- {apiVersion: apps/v1, kind: Deployment}\n";
        parse("x.yaml", text, &mut out).unwrap();
        let origins: Vec<String> = out.iter().map(|m| m.origin.to_string()).collect();
        assert_eq!(
            origins,
            ["x.yaml#1", "x.yaml#2.items[0]", "x.yaml#2.items[1]"]
        );
    }

    #[test]
    fn errors_name_file_and_document() {
        let mut out = Vec::new();
        let err = parse(
            "x.yaml",
            "apiVersion: v1\nkind: Pod\n---\n- a list\n",
            &mut out,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.yaml#2: not a Kubernetes object (a mapping with apiVersion and kind)"
        );
        let err = parse("y.json", "{", &mut out).unwrap_err();
        assert_eq!(err.to_string(), "y.json: invalid JSON");
    }
}
