//! Turning a slash-separated path below a remote's root into a folder or a file.

use super::{FileEntry, FolderId, Listing, Remote, RemoteError, RemoteResult};

/// What a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    Folder {
        id: FolderId,
        /// Empty for the root.
        name: String,
        /// `None` for the root.
        parent: Option<FolderId>,
    },
    File {
        entry: FileEntry,
        parent: FolderId,
    },
}

impl Resolved {
    pub fn is_folder(&self) -> bool {
        matches!(self, Resolved::Folder { .. })
    }
}

/// The non-empty components of `path` (`"/a//b/"` → `["a", "b"]`).
pub fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

/// Finds `name` among the folders and files of `listing`. Several entries
/// of that name (possible on services with duplicate names) are an error
/// that names each id, so the caller can tell the user what to pick.
pub fn find_in(
    listing: &Listing,
    name: &str,
    parent: &FolderId,
    shown_path: &str,
) -> RemoteResult<Resolved> {
    let folders: Vec<_> = listing.folders.iter().filter(|f| f.name == name).collect();
    let files: Vec<_> = listing.files.iter().filter(|f| f.name == name).collect();
    match (folders.as_slice(), files.as_slice()) {
        ([], []) => Err(RemoteError::NotFound(shown_path.to_string())),
        ([folder], []) => Ok(Resolved::Folder {
            id: folder.id.clone(),
            name: folder.name.clone(),
            parent: Some(parent.clone()),
        }),
        ([], [file]) => Ok(Resolved::File {
            entry: (*file).clone(),
            parent: parent.clone(),
        }),
        _ => {
            let ids: Vec<String> = folders
                .iter()
                .map(|f| format!("folder {}", f.id))
                .chain(files.iter().map(|f| format!("file {}", f.id)))
                .collect();
            Err(RemoteError::Fatal(format!(
                "{shown_path}: {} entries share this name ({})",
                ids.len(),
                ids.join(", ")
            )))
        }
    }
}

/// Resolves `path` (relative to the remote's root; empty = the root),
/// listing each folder on the way.
pub async fn resolve_path(remote: &dyn Remote, path: &str) -> RemoteResult<Resolved> {
    resolve_path_with(remote.root(), path, |folder| async move {
        remote.list_folder(&folder).await
    })
    .await
}

/// Resolves `path` below `root`, getting each folder's listing on the way
/// from `list` (the service, or a cache in front of it).
pub async fn resolve_path_with<L, F>(
    root: FolderId,
    path: &str,
    mut list: L,
) -> RemoteResult<Resolved>
where
    L: FnMut(FolderId) -> F,
    F: std::future::Future<Output = RemoteResult<Listing>>,
{
    let parts = components(path);
    let mut current = Resolved::Folder {
        id: root,
        name: String::new(),
        parent: None,
    };
    for (depth, part) in parts.iter().enumerate() {
        let shown = parts[..=depth].join("/");
        let folder = match &current {
            Resolved::Folder { id, .. } => id.clone(),
            Resolved::File { .. } => {
                return Err(RemoteError::NotFound(format!(
                    "{shown}: {} is a file, not a folder",
                    parts[..depth].join("/")
                )))
            }
        };
        let listing = list(folder.clone()).await?;
        current = find_in(&listing, part, &folder, &shown)?;
    }
    Ok(current)
}

/// Resolves `path` and requires a folder.
pub async fn resolve_folder(remote: &dyn Remote, path: &str) -> RemoteResult<FolderId> {
    match resolve_path(remote, path).await? {
        Resolved::Folder { id, .. } => Ok(id),
        Resolved::File { .. } => Err(RemoteError::AlreadyExists(format!(
            "{path} is a file, not a folder"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{FileEntry, FileId, FolderEntry};
    use chrono::DateTime;

    fn file(id: &str, name: &str) -> FileEntry {
        FileEntry {
            id: FileId(id.into()),
            name: name.into(),
            size: 1,
            modified: DateTime::UNIX_EPOCH,
            checksum: None,
            mime: None,
            share_link: None,
            expires: None,
        }
    }

    #[test]
    fn duplicates_are_reported_with_their_ids() {
        let listing = Listing {
            folders: vec![FolderEntry {
                id: FolderId("7".into()),
                name: "d".into(),
                created: None,
            }],
            files: vec![file("u1", "a"), file("u2", "a"), file("u3", "b")],
        };
        let root = FolderId("0".into());
        let err = find_in(&listing, "a", &root, "x/a")
            .unwrap_err()
            .to_string();
        assert!(err.contains("u1") && err.contains("u2"), "{err}");
        assert!(matches!(
            find_in(&listing, "b", &root, "b"),
            Ok(Resolved::File { .. })
        ));
        assert!(find_in(&listing, "d", &root, "d").unwrap().is_folder());
        assert!(matches!(
            find_in(&listing, "zz", &root, "zz"),
            Err(RemoteError::NotFound(_))
        ));
    }

    #[test]
    fn empty_components_are_ignored() {
        assert_eq!(components("/a//b/"), vec!["a", "b"]);
        assert!(components("").is_empty());
    }
}
