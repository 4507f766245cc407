//! The layering rules of the crate, checked from the source:
//! 1. no file under `src/fs/` but the adapter uses `fuser`;
//! 2. nothing under `src/remote/`, `src/cache/`, `src/writeback/` decides an
//!    errno (no `libc::E...` constant, no `errno`);
//! 3. no two files under `src/` import each other.
//!
//! Imports are the `use crate::...`, `use super::...` and `use self::...`
//! items of a file outside its `#[cfg(test)]` module, and the paths its
//! code names inline the same way (`super::overlay::apply(...)`), each
//! resolved to the file that defines the longest matching module path. A folder's `mod.rs`
//! and the files directly in that folder are exempt from rule 3: the
//! `mod.rs` declares and re-exports its children, which share the types it
//! defines; that is the module's hierarchy, not a circle between peers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src`, by its path relative to `src`.
fn source_files(src: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut folders = vec![src.to_path_buf()];
    let mut visited = 0;
    while let Some(folder) = folders.pop() {
        visited += 1;
        assert!(visited < 10_000, "too many folders under {}", src.display());
        for entry in std::fs::read_dir(&folder).expect("readable source folder") {
            let path = entry.expect("folder entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path.strip_prefix(src).unwrap();
                let relative = relative.to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path).expect("readable source file");
                files.insert(relative, text);
            }
        }
    }
    files
}

/// The module path of a file: `fs/write.rs` is `["fs", "write"]`,
/// `fs/mod.rs` is `["fs"]`, `lib.rs` is `[]`.
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    let last = parts.last().cloned().unwrap_or_default();
    if last == "mod" || (parts.len() == 1 && (last == "lib" || last == "main")) {
        parts.pop();
    }
    parts
}

/// The code of a file without its test module (by convention the last
/// item of the file) and without comments.
fn production_code(text: &str) -> String {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    code.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a `use` tree names, braces expanded: `a::{b, c::{d, e}}` is
/// `a::b`, `a::c::d`, `a::c::e`.
fn expand_use_tree(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(&tree).to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.is_empty())
        .flat_map(|item| expand_use_tree(&format!("{prefix}{item}")))
        .collect()
}

/// The `use` paths of some code, as written.
fn use_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    let mut guard = 0;
    while let Some(at) = find_use(rest) {
        guard += 1;
        assert!(guard < 100_000);
        let after = &rest[at..];
        let end = after.find(';').unwrap_or(after.len());
        let tree = after[..end].trim_start_matches("use").trim();
        paths.extend(expand_use_tree(tree));
        rest = &after[end..];
    }
    paths
}

/// Paths the code names inline, outside `use` items, from the crate root
/// or a parent module: `super::overlay::apply` in `super::overlay::apply(x)`.
fn inline_paths(code: &str) -> Vec<String> {
    let code = without_use_items(code);
    let mut paths = Vec::new();
    for root in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(root) {
            // Part of a longer name or path (`my_super::`, `super::super::`).
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.push(path.trim_end_matches(':').to_string());
        }
    }
    paths
}

/// The code without its `use` items (their paths are read whole, braces
/// and all, by [`use_paths`]).
fn without_use_items(code: &str) -> String {
    let mut kept = String::new();
    let mut rest = code;
    while let Some(at) = find_use(rest) {
        kept.push_str(&rest[..at]);
        let after = &rest[at..];
        rest = &after[after.find(';').map_or(after.len(), |end| end + 1)..];
    }
    kept.push_str(rest);
    kept
}

/// Where the next `use` item starts (at the start of a line, after an
/// optional visibility).
fn find_use(code: &str) -> Option<usize> {
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let item = ["pub(crate) use ", "pub(super) use ", "pub use ", "use "]
            .iter()
            .find(|prefix| trimmed.starts_with(*prefix));
        if let Some(prefix) = item {
            let visibility = prefix.len() - "use ".len();
            return Some(offset + indent + visibility);
        }
        offset += line.len();
    }
    None
}

/// The module a `use` path points into, from the module `from` it is
/// written in; `None` for paths outside the crate.
fn resolve(from: &[String], path: &str) -> Option<Vec<String>> {
    let mut segments = path.split("::");
    let mut module: Vec<String> = match segments.next()? {
        "crate" => Vec::new(),
        "self" => from.to_vec(),
        "super" => from[..from.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    for segment in segments {
        match segment {
            "super" => {
                module.pop()?;
            }
            "self" | "*" => {}
            name => module.push(name.to_string()),
        }
    }
    Some(module)
}

/// The file defining the longest prefix of `module` among `modules`.
fn file_of(module: &[String], modules: &BTreeMap<Vec<String>, String>) -> Option<String> {
    (0..=module.len())
        .rev()
        .find_map(|len| modules.get(&module[..len]).cloned())
}

/// Which files each file imports.
fn imports(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeMap<Vec<String>, String> = files
        .keys()
        .filter(|file| file.as_str() != "main.rs")
        .map(|file| (module_of(file), file.clone()))
        .collect();
    let mut graph = BTreeMap::new();
    for (file, text) in files {
        let from = module_of(file);
        let mut targets = BTreeSet::new();
        let code = production_code(text);
        for path in use_paths(&code).into_iter().chain(inline_paths(&code)) {
            let Some(module) = resolve(&from, &path) else {
                continue;
            };
            if let Some(target) = file_of(&module, &modules) {
                if &target != file {
                    targets.insert(target);
                }
            }
        }
        graph.insert(file.clone(), targets);
    }
    graph
}

/// Whether `a` is the `mod.rs` of the folder `b` sits directly in.
fn is_folder_front(a: &str, b: &str) -> bool {
    let Some(folder) = a.strip_suffix("mod.rs") else {
        return false;
    };
    b.strip_prefix(folder)
        .is_some_and(|rest| !rest.contains('/') && rest != "mod.rs")
}

/// Pairs of files that import each other.
fn import_circles(files: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let graph = imports(files);
    let mut circles = Vec::new();
    for (a, targets) in &graph {
        for b in targets {
            let back = graph.get(b).is_some_and(|t| t.contains(a));
            if a < b && back && !is_folder_front(a, b) && !is_folder_front(b, a) {
                circles.push((a.clone(), b.clone()));
            }
        }
    }
    circles
}

/// Files under `fs/` other than the adapter that use fuser.
fn fuser_outside_adapter(files: &BTreeMap<String, String>) -> Vec<String> {
    files
        .iter()
        .filter(|(file, _)| file.starts_with("fs/") && file.as_str() != "fs/adapter.rs")
        .filter(|(_, text)| production_code(text).contains("fuser"))
        .map(|(file, _)| file.clone())
        .collect()
}

/// Files of the layers below `fs` that decide an errno.
fn errno_below_fs(files: &BTreeMap<String, String>) -> Vec<String> {
    files
        .iter()
        .filter(|(file, _)| {
            ["remote/", "cache/", "writeback/"]
                .iter()
                .any(|layer| file.starts_with(layer))
        })
        .filter(|(_, text)| {
            let code = text.to_string();
            code.contains("errno") || has_errno_constant(&code)
        })
        .map(|(file, _)| file.clone())
        .collect()
}

fn has_errno_constant(code: &str) -> bool {
    code.match_indices("libc::E").any(|(at, _)| {
        code[at + "libc::E".len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase())
    })
}

/// This crate's sources, or another tree's (`ARCHITECTURE_SRC`, to check
/// an older checkout).
fn crate_src() -> PathBuf {
    match std::env::var_os("ARCHITECTURE_SRC") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    }
}

#[test]
fn only_the_adapter_uses_fuser() {
    let files = source_files(&crate_src());
    let offenders = fuser_outside_adapter(&files);
    assert!(
        offenders.is_empty(),
        "fuser used outside fs/adapter.rs: {offenders:?}"
    );
}

#[test]
fn the_layers_below_fs_decide_no_errno() {
    let files = source_files(&crate_src());
    let offenders = errno_below_fs(&files);
    assert!(offenders.is_empty(), "errno decided in {offenders:?}");
}

#[test]
fn no_two_files_import_each_other() {
    let files = source_files(&crate_src());
    assert!(files.len() > 20, "sources not found");
    let circles = import_circles(&files);
    assert!(
        circles.is_empty(),
        "files importing each other: {circles:?}"
    );
}

/// The checker itself, on a small fake tree breaking every rule.
#[test]
fn the_checker_finds_each_broken_rule() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |file: &str, text: &str| {
        let path = src.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod fs;\npub mod remote;\n");
    write(
        "fs/mod.rs",
        "pub mod adapter;\npub mod core;\npub mod names;\nuse self::core::Core;\n",
    );
    write(
        "fs/adapter.rs",
        "use fuser::Filesystem;\nuse super::core::Core;\n",
    );
    write(
        "fs/core.rs",
        "use fuser::ReplyEmpty;\nuse crate::fs::{\n    adapter::Thing,\n    names::{Name, other::X},\n};\nuse super::Core;\n",
    );
    write(
        "fs/names.rs",
        "// use super::core::Core; in a comment only\npub(crate) use super::core::Core as C;\n",
    );
    write(
        "fs/read.rs",
        "use super::write::Staged;\npub fn read() { let _ = my_super::x(); }\n",
    );
    write(
        "fs/write.rs",
        "pub fn write() -> u8 {\n    super::read::read();\n    super::super::remote::error::code()\n}\n",
    );
    write("remote/mod.rs", "pub mod error;\n");
    write(
        "remote/error.rs",
        "pub fn code() -> i32 { libc::EIO }\n#[cfg(test)]\nmod tests {\n    use crate::fs::core::Core;\n}\n",
    );
    let files = source_files(src);
    assert_eq!(
        fuser_outside_adapter(&files),
        vec!["fs/core.rs".to_string()]
    );
    assert_eq!(errno_below_fs(&files), vec!["remote/error.rs".to_string()]);
    // core <-> names and core <-> adapter (by `use`), read <-> write (one
    // way by an inline path); fs/mod.rs <-> core.rs is the folder's
    // hierarchy; the comment and the test module import nothing.
    assert_eq!(
        import_circles(&files),
        vec![
            ("fs/adapter.rs".to_string(), "fs/core.rs".to_string()),
            ("fs/core.rs".to_string(), "fs/names.rs".to_string()),
            ("fs/read.rs".to_string(), "fs/write.rs".to_string()),
        ]
    );
    // An inline path is an import too, resolved like a `use` path.
    assert_eq!(
        imports(&files)["fs/write.rs"],
        BTreeSet::from(["fs/read.rs".to_string(), "remote/error.rs".to_string()])
    );
    assert_eq!(
        imports(&files)["remote/error.rs"],
        BTreeSet::new(),
        "a test module's imports are not the file's"
    );
}
