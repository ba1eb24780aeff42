//! The guard's pins in bpffs, which keep it enforcing while no agent runs:
//!
//! ```text
//! PIN_DIR/
//!   maps-<layout>/PG_*        the maps, in a folder named by a fingerprint of their layout
//!   links/<ifindex>_xdp-native, <ifindex>_xdp-generic, <ifindex>_egress
//!   programs/portguard_xdp, portguard_egress
//! ```
//!
//! A restarted agent reuses the maps of its own layout, replaces the programs on the pinned
//! links, and removes maps of other layouts (an upgrade that changed a map) once its programs
//! run. Every pin is checked before use: a map whose type or sizes differ, or a link that is
//! not an XDP or tcx link running a portguard program, is reported and never reused.

use std::{
    ffi::CString,
    fs, io,
    os::{fd::FromRawFd as _, fd::OwnedFd, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{Map, MapData, MapInfo},
};
use portguard_common::map_names;

/// `BPF_FS_MAGIC` from `<linux/magic.h>`.
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
/// Where systemd (and the agent, when it is missing) mounts the BPF filesystem.
pub const SYS_FS_BPF: &str = "/sys/fs/bpf";
/// Prefix of the programs' names, as the kernel reports them (at most 15 bytes).
const PROGRAM_NAME_PREFIX: &str = "portguard_";

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{0} is not on a BPF filesystem: mount one there (`mount -t bpf bpf DIR`) or choose \
         --pin-dir under {SYS_FS_BPF}"
    )]
    NotBpffs(PathBuf),
    #[error("mount the BPF filesystem at {SYS_FS_BPF} (needs CAP_SYS_ADMIN)")]
    Mount(#[source] nix::Error),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} was not pinned by this version of portguard ({why}); it is left alone: \
         remove it, or run `portguard uninstall --pin-dir {dir}` if it is an old guard",
        dir = .dir.display(),
        path = .path.display()
    )]
    Foreign {
        path: PathBuf,
        dir: PathBuf,
        why: String,
    },
    #[error(
        "another portguard agent holds the pin folder {0}: stop it first (one agent per pin \
         folder)"
    )]
    Busy(PathBuf),
    #[error("read map {name} of the eBPF object")]
    MapInfo {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PinError + '_ {
    move |source| PinError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|fs| fs.filesystem_type().0 as u64 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Makes sure `dir` can hold pins: a bpffs is mounted at /sys/fs/bpf when the folder is
/// under it and nothing is mounted there yet; anywhere else a bpffs must already be there.
pub fn ensure_bpffs(dir: &Path) -> Result<(), PinError> {
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(dir);
    if is_bpffs(existing) {
        return Ok(());
    }
    let sys_fs_bpf = Path::new(SYS_FS_BPF);
    if !dir.starts_with(sys_fs_bpf) || existing != sys_fs_bpf && existing.starts_with(sys_fs_bpf) {
        return Err(PinError::NotBpffs(dir.to_owned()));
    }
    fs::create_dir_all(sys_fs_bpf).map_err(io_error(sys_fs_bpf))?;
    nix::mount::mount(
        Some("bpf"),
        sys_fs_bpf,
        Some("bpf"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(PinError::Mount)?;
    tracing::info!("mounted the BPF filesystem at {SYS_FS_BPF}");
    // A mount in a mount namespace of the agent's own (`ip netns exec`, `unshare -m`, a
    // container) goes with that namespace, and the pins with it: the guard would not outlast
    // the agent. Say so, loudly; mount bpffs where the agent's namespace inherits it instead.
    if !in_init_mount_namespace() {
        tracing::warn!(
            "{SYS_FS_BPF} was mounted by the agent, which may run in a mount namespace of its \
             own: then the pins end with that namespace, and the guard is detached when the \
             agent exits. Mount bpffs in the host's namespace first, or give --pin-dir a \
             bpffs the agent inherits"
        );
    }
    Ok(())
}

/// The pin folder, held by one agent: a second one on the same folder would take the first
/// one's links over from under it. Released when dropped (or when the process ends).
#[derive(Debug)]
pub struct PinLock {
    _held: nix::fcntl::Flock<fs::File>,
}

/// Takes the pin folder `root` (which must exist) for this process, or says who has it.
pub fn lock(root: &Path) -> Result<PinLock, PinError> {
    let dir = fs::File::open(root).map_err(io_error(root))?;
    match nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(PinLock { _held: held }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(PinError::Busy(root.to_owned())),
        Err((_, errno)) => Err(io_error(root)(errno.into())),
    }
}

/// Whether this process is known to share the mount namespace of PID 1 (when that cannot
/// be read, it is not known).
fn in_init_mount_namespace() -> bool {
    match (
        fs::read_link("/proc/self/ns/mnt"),
        fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(own), Ok(init)) => own == init,
        _ => false,
    }
}

/// A map as the kernel describes it: what must match for a pin to be reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl MapSpec {
    fn from_info(name: &'static str, info: &MapInfo) -> Self {
        Self {
            name,
            map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        }
    }

    fn differences(&self, found: &MapSpec) -> Option<String> {
        let mut why = Vec::new();
        let mut compare = |what: &str, want: u32, have: u32| {
            if want != have {
                why.push(format!("{what} {have}, expected {want}"));
            }
        };
        compare("type", self.map_type, found.map_type);
        compare("key size", self.key_size, found.key_size);
        compare("value size", self.value_size, found.value_size);
        compare("max entries", self.max_entries, found.max_entries);
        compare("flags", self.flags, found.flags);
        (!why.is_empty()).then(|| why.join(", "))
    }
}

/// The layout of every map of a freshly loaded (unpinned) object.
pub fn map_specs(ebpf: &Ebpf) -> Result<Vec<MapSpec>, PinError> {
    map_names::ALL
        .iter()
        .map(|&name| {
            let data = ebpf.map(name).and_then(map_data).ok_or(PinError::MapInfo {
                name,
                source: aya::maps::MapError::InvalidName { name: name.into() },
            })?;
            let info = data
                .info()
                .map_err(|source| PinError::MapInfo { name, source })?;
            Ok(MapSpec::from_info(name, &info))
        })
        .collect()
}

fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LpmTrie(data)
        | Map::LruHashMap(data)
        | Map::PerCpuArray(data)
        | Map::PerCpuHashMap(data)
        | Map::RingBuf(data) => Some(data),
        _ => None,
    }
}

/// A short, stable name for a set of map layouts (FNV-1a, 64 bits).
pub fn fingerprint(specs: &[MapSpec]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for spec in specs {
        eat(spec.name.as_bytes());
        for field in [
            spec.map_type,
            spec.key_size,
            spec.value_size,
            spec.max_entries,
            spec.flags,
        ] {
            eat(&field.to_le_bytes());
        }
    }
    format!("{hash:016x}")
}

/// What a link pin's file name says: the interface and which program it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    XdpNative,
    XdpGeneric,
    Egress,
}

impl LinkKind {
    fn suffix(self) -> &'static str {
        match self {
            LinkKind::XdpNative => "xdp-native",
            LinkKind::XdpGeneric => "xdp-generic",
            LinkKind::Egress => "egress",
        }
    }

    fn parse(suffix: &str) -> Option<Self> {
        [Self::XdpNative, Self::XdpGeneric, Self::Egress]
            .into_iter()
            .find(|kind| kind.suffix() == suffix)
    }

    fn link_type(self) -> u32 {
        match self {
            LinkKind::XdpNative | LinkKind::XdpGeneric => BPF_LINK_TYPE_XDP,
            LinkKind::Egress => BPF_LINK_TYPE_TCX,
        }
    }
}

/// A link pinned by an agent before this one.
#[derive(Clone, Debug)]
pub struct PinnedLinkFile {
    pub path: PathBuf,
    pub ifindex: u32,
    pub kind: LinkKind,
    /// The kernel's id of the link.
    pub link_id: u32,
    /// False when the interface is gone: the kernel keeps the link, attached to nothing.
    pub live: bool,
}

/// The pin folder of one guard.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
    maps: PathBuf,
}

impl PinDir {
    /// Prepares `root` for the maps of the given layouts, checking every map pinned there
    /// before: a pin of this layout whose type or sizes differ was not made by us.
    pub fn prepare(root: &Path, specs: &[MapSpec]) -> Result<Self, PinError> {
        ensure_bpffs(root)?;
        let maps = root.join(format!("maps-{}", fingerprint(specs)));
        for dir in [
            root.to_owned(),
            root.join("links"),
            root.join("programs"),
            maps.clone(),
        ] {
            fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        }
        let pins = Self {
            root: root.to_owned(),
            maps,
        };
        for spec in specs {
            let path = pins.map(spec.name);
            if !path.exists() {
                continue;
            }
            let info = MapInfo::from_pin(&path).map_err(|error| pins.foreign(&path, error))?;
            let found = MapSpec::from_info(spec.name, &info);
            if let Some(why) = spec.differences(&found) {
                return Err(pins.foreign(&path, why));
            }
        }
        Ok(pins)
    }

    fn foreign(&self, path: &Path, why: impl ToString) -> PinError {
        foreign(&self.root, path, why)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps.join(name)
    }

    pub fn program(&self, name: &str) -> PathBuf {
        self.root.join("programs").join(name)
    }

    pub fn link(&self, ifindex: u32, kind: LinkKind) -> PathBuf {
        self.root
            .join("links")
            // bpffs refuses names with a dot.
            .join(format!("{ifindex}_{}", kind.suffix()))
    }

    /// The links pinned in this folder, each checked: an XDP or tcx link running one of our
    /// programs. Anything else is reported, not reused.
    pub fn links(&self) -> Result<Vec<PinnedLinkFile>, PinError> {
        links_in(&self.root)
    }

    /// Map folders of other layouts (left by an older version), to remove once this
    /// version's programs run on every link.
    pub fn other_layouts(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| Some(entry.ok()?.path()))
            .filter(|path| {
                path.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("maps-"))
                    && *path != self.maps
            })
            .collect()
    }
}

/// The links pinned under `root`, each checked: an XDP or tcx link running one of our
/// programs, named as portguard names them. Anything else is reported, not reused.
pub fn links_in(root: &Path) -> Result<Vec<PinnedLinkFile>, PinError> {
    let dir = root.join("links");
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
        let path = entry.map_err(io_error(&dir))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let parsed = name
            .split_once('_')
            .and_then(|(index, kind)| Some((index.parse().ok()?, LinkKind::parse(kind)?)));
        let Some((ifindex, kind)) = parsed else {
            return Err(foreign(root, &path, "not a name portguard gives its links"));
        };
        let info = link_info(&path).map_err(|error| foreign(root, &path, error))?;
        if info.link_type != kind.link_type() {
            return Err(foreign(
                root,
                &path,
                format!("link type {}", info.link_type),
            ));
        }
        let program = program_name(info.program_id);
        if !program
            .as_deref()
            .is_some_and(|p| p.starts_with(PROGRAM_NAME_PREFIX))
        {
            return Err(foreign(
                root,
                &path,
                format!(
                    "it runs program {}",
                    program.as_deref().unwrap_or("(unknown)")
                ),
            ));
        }
        if info.ifindex != 0 && info.ifindex != ifindex {
            return Err(foreign(
                root,
                &path,
                format!("attached to ifindex {}", info.ifindex),
            ));
        }
        found.push(PinnedLinkFile {
            path,
            ifindex,
            kind,
            link_id: info.id,
            live: info.ifindex != 0,
        });
    }
    found.sort_by_key(|link| (link.ifindex, link.path.clone()));
    Ok(found)
}

fn foreign(root: &Path, path: &Path, why: impl ToString) -> PinError {
    PinError::Foreign {
        path: path.to_owned(),
        dir: root.to_owned(),
        why: why.to_string(),
    }
}

/// Removes every pin under `root` that portguard makes (links first, so that the guard
/// detaches before its maps go), then the folders. Returns what was removed.
pub fn remove_all(root: &Path) -> Result<Vec<PathBuf>, PinError> {
    let mut removed = Vec::new();
    if !root.exists() {
        return Ok(removed);
    }
    let mut folders = vec![root.join("links"), root.join("programs")];
    let mut layouts: Vec<PathBuf> = fs::read_dir(root)
        .map_err(io_error(root))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("maps-"))
        })
        .collect();
    layouts.sort();
    folders.extend(layouts);
    for folder in &folders {
        removed.extend(remove_folder(folder)?);
    }
    match fs::remove_dir(root) {
        Ok(()) => removed.push(root.to_owned()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(root)(error)),
    }
    Ok(removed)
}

/// Unpins every file of a folder, then the folder.
pub fn remove_folder(folder: &Path) -> Result<Vec<PathBuf>, PinError> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(error) => return Err(io_error(folder)(error)),
    };
    for entry in entries {
        let path = entry.map_err(io_error(folder))?.path();
        fs::remove_file(&path).map_err(io_error(&path))?;
        removed.push(path);
    }
    fs::remove_dir(folder).map_err(io_error(folder))?;
    removed.push(folder.to_owned());
    Ok(removed)
}

/// `BPF_LINK_TYPE_XDP` and `BPF_LINK_TYPE_TCX` from `<linux/bpf.h>`.
const BPF_LINK_TYPE_XDP: u32 = 6;
const BPF_LINK_TYPE_TCX: u32 = 11;
/// `bpf(2)` commands.
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The part of `struct bpf_link_info` we read: the header, then the union, whose XDP and
/// tcx members both start with the interface index.
#[repr(C, align(8))]
#[derive(Default)]
struct RawLinkInfo {
    link_type: u32,
    id: u32,
    program_id: u32,
    _pad: u32,
    ifindex: u32,
    rest: [u32; 11],
}

pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub program_id: u32,
    /// 0 once the interface is gone.
    pub ifindex: u32,
}

/// Reads a pinned link's type, ids and interface. aya's `LinkInfo` does not expose the
/// interface, so this asks the kernel directly.
pub fn link_info(path: &Path) -> io::Result<LinkInfo> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        // Explicit, so that it is zero: the kernel refuses non-zero bytes past the fields.
        _pad: u32,
    }
    let attr = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: the attribute is a valid BPF_OBJ_GET attr whose path outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGet,
            size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };

    let mut info = RawLinkInfo::default();
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let attr = GetInfo {
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        info_len: size_of::<RawLinkInfo>() as u32,
        info: &mut info as *mut RawLinkInfo as u64,
    };
    // SAFETY: `info` is a writable buffer of `info_len` bytes that outlives the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const GetInfo,
            size_of::<GetInfo>(),
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(LinkInfo {
        link_type: info.link_type,
        id: info.id,
        program_id: info.program_id,
        ifindex: info.ifindex,
    })
}

/// The name the kernel gives a loaded program.
fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|program| program.id() == id)
        .and_then(|program| program.name_as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &'static str, max_entries: u32) -> MapSpec {
        MapSpec {
            name,
            map_type: 1,
            key_size: 4,
            value_size: 8,
            max_entries,
            flags: 0,
        }
    }

    #[test]
    fn a_changed_map_changes_the_fingerprint() {
        let before = [spec("PG_A", 16), spec("PG_B", 1)];
        let after = [spec("PG_A", 32), spec("PG_B", 1)];
        assert_eq!(fingerprint(&before), fingerprint(&before.clone()));
        assert_ne!(fingerprint(&before), fingerprint(&after));
        assert_eq!(fingerprint(&before).len(), 16);
    }

    #[test]
    fn differences_name_each_field() {
        let want = spec("PG_A", 16);
        let mut found = want.clone();
        assert_eq!(want.differences(&found), None);
        found.value_size = 12;
        found.max_entries = 8;
        assert_eq!(
            want.differences(&found).as_deref(),
            Some("value size 12, expected 8, max entries 8, expected 16")
        );
    }

    #[test]
    fn link_names_round_trip() {
        for kind in [LinkKind::XdpNative, LinkKind::XdpGeneric, LinkKind::Egress] {
            assert_eq!(LinkKind::parse(kind.suffix()), Some(kind));
        }
        assert_eq!(LinkKind::parse("xdp"), None);
    }

    #[test]
    fn a_folder_off_bpffs_is_refused_unless_it_is_the_default_mount() {
        let dir = tempfile::tempdir().unwrap();
        let error = ensure_bpffs(&dir.path().join("pins")).unwrap_err();
        assert!(matches!(error, PinError::NotBpffs(_)), "{error}");
    }
}
