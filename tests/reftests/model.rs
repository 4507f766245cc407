//! The reference model: what POSIX and docs/SEMANTICS.md promise for a
//! 1fichier-like account (folders, renames and moves, no empty files on
//! the service), as a plain tree of folders and byte vectors.
//!
//! Nodes live in an arena and are never freed, so a handle on a file that
//! was unlinked or replaced keeps reading and writing its bytes, as POSIX
//! wants of an open descriptor.

use std::collections::BTreeMap;

pub type NodeId = usize;

pub const ROOT: NodeId = 0;

#[derive(Clone, Debug)]
pub struct File {
    pub data: Vec<u8>,
    /// What is promised to survive a killed process: the content at the
    /// last close, fsync or truncation by path; `None` when the file was
    /// created and never closed since (it may vanish with the process).
    pub durable: Option<Vec<u8>>,
    /// On the service exactly as `data`, with nothing pending: only such
    /// files are changed "by another client" (changing a file this mount
    /// is writing is a conflict whose outcome no document promises).
    pub clean: bool,
}

#[derive(Clone, Debug)]
pub enum Node {
    Dir(BTreeMap<String, NodeId>),
    File(File),
}

#[derive(Clone, Debug)]
pub struct Model {
    pub nodes: Vec<Node>,
}

/// What a listing or a stat shows of one entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shown {
    Dir,
    File { size: u64 },
}

impl Model {
    pub fn new() -> Self {
        Model {
            nodes: vec![Node::Dir(BTreeMap::new())],
        }
    }

    pub fn children(&self, dir: NodeId) -> &BTreeMap<String, NodeId> {
        match &self.nodes[dir] {
            Node::Dir(children) => children,
            Node::File(_) => panic!("node {dir} is not a folder"),
        }
    }

    fn children_mut(&mut self, dir: NodeId) -> &mut BTreeMap<String, NodeId> {
        match &mut self.nodes[dir] {
            Node::Dir(children) => children,
            Node::File(_) => panic!("node {dir} is not a folder"),
        }
    }

    pub fn file(&self, id: NodeId) -> &File {
        match &self.nodes[id] {
            Node::File(file) => file,
            Node::Dir(_) => panic!("node {id} is not a file"),
        }
    }

    pub fn file_mut(&mut self, id: NodeId) -> &mut File {
        match &mut self.nodes[id] {
            Node::File(file) => file,
            Node::Dir(_) => panic!("node {id} is not a file"),
        }
    }

    pub fn is_dir(&self, id: NodeId) -> bool {
        matches!(self.nodes[id], Node::Dir(_))
    }

    /// The folder `path` names, walking from the root as lookups do:
    /// `ENOENT` for a missing component, `ENOTDIR` for a file on the way.
    pub fn resolve_dir(&self, path: &[String]) -> Result<NodeId, i32> {
        let mut at = ROOT;
        for name in path {
            if !self.is_dir(at) {
                return Err(libc::ENOTDIR);
            }
            at = *self.children(at).get(name).ok_or(libc::ENOENT)?;
        }
        if !self.is_dir(at) {
            return Err(libc::ENOTDIR);
        }
        Ok(at)
    }

    /// The node `path` names (its folder must exist).
    pub fn resolve(&self, path: &[String]) -> Result<NodeId, i32> {
        let (name, parent) = path.split_last().expect("a path has a name");
        let parent = self.resolve_dir(parent)?;
        self.children(parent).get(name).copied().ok_or(libc::ENOENT)
    }

    pub fn shown(&self, id: NodeId) -> Shown {
        match &self.nodes[id] {
            Node::Dir(_) => Shown::Dir,
            Node::File(file) => Shown::File {
                size: file.data.len() as u64,
            },
        }
    }

    pub fn listing(&self, dir: NodeId) -> Vec<(String, Shown)> {
        self.children(dir)
            .iter()
            .map(|(name, &id)| (name.clone(), self.shown(id)))
            .collect()
    }

    fn add(&mut self, parent: NodeId, name: &str, node: Node) -> NodeId {
        self.nodes.push(node);
        let id = self.nodes.len() - 1;
        self.children_mut(parent).insert(name.to_string(), id);
        id
    }

    pub fn add_file(&mut self, parent: NodeId, name: &str, file: File) -> NodeId {
        self.add(parent, name, Node::File(file))
    }

    pub fn add_dir(&mut self, parent: NodeId, name: &str) -> NodeId {
        self.add(parent, name, Node::Dir(BTreeMap::new()))
    }

    pub fn remove(&mut self, parent: NodeId, name: &str) -> Option<NodeId> {
        self.children_mut(parent).remove(name)
    }

    /// Whether `inner` is `outer` or lies below it.
    pub fn is_within(&self, inner: NodeId, outer: NodeId) -> bool {
        if inner == outer {
            return true;
        }
        match &self.nodes[outer] {
            Node::Dir(children) => children.values().any(|&c| self.is_within(inner, c)),
            Node::File(_) => false,
        }
    }

    /// `rename(2)` on the model: the errno POSIX gives, or the move done.
    pub fn rename(&mut self, from: &[String], to: &[String], noreplace: bool) -> Result<(), i32> {
        let (name, from_parent) = from.split_last().expect("a path has a name");
        let (new_name, to_parent) = to.split_last().expect("a path has a name");
        let from_parent = self.resolve_dir(from_parent)?;
        let to_parent = self.resolve_dir(to_parent)?;
        let source = *self.children(from_parent).get(name).ok_or(libc::ENOENT)?;
        let target = self.children(to_parent).get(new_name).copied();
        if target == Some(source) {
            return Ok(());
        }
        if let Some(target) = target {
            if noreplace {
                return Err(libc::EEXIST);
            }
            match (self.is_dir(source), self.is_dir(target)) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                _ => {}
            }
        }
        if self.is_dir(source) && self.is_within(to_parent, source) {
            return Err(libc::EINVAL);
        }
        if let Some(target) = target {
            if self.is_dir(target) && !self.children(target).is_empty() {
                return Err(libc::ENOTEMPTY);
            }
        }
        self.remove(from_parent, name);
        self.children_mut(to_parent)
            .insert(new_name.clone(), source);
        Ok(())
    }

    /// Every file reachable from the root, with its path.
    pub fn files(&self) -> Vec<(Vec<String>, NodeId)> {
        let mut out = Vec::new();
        self.walk(ROOT, &mut Vec::new(), &mut |path, id, node| {
            if let Node::File(_) = node {
                out.push((path.to_vec(), id));
            }
        });
        out
    }

    /// Every folder reachable from the root (the root first), with its path.
    pub fn dirs(&self) -> Vec<(Vec<String>, NodeId)> {
        let mut out = vec![(Vec::new(), ROOT)];
        self.walk(ROOT, &mut Vec::new(), &mut |path, id, node| {
            if let Node::Dir(_) = node {
                out.push((path.to_vec(), id));
            }
        });
        out
    }

    fn walk(
        &self,
        dir: NodeId,
        path: &mut Vec<String>,
        visit: &mut dyn FnMut(&[String], NodeId, &Node),
    ) {
        for (name, &id) in self.children(dir) {
            path.push(name.clone());
            visit(path, id, &self.nodes[id]);
            if self.is_dir(id) {
                self.walk(id, path, visit);
            }
            path.pop();
        }
    }
}
