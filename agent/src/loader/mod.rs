//! Loads the kernel programs, fills their maps from compiled policy entries, and attaches
//! them to interfaces: the XDP guard on ingress and the UDP flow recorder on tcx egress.
//! A pinned guard (see [`pins`]) outlives the agent and is adopted by the next one.

pub mod pins;

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use portguard_common::{
    map_names,
    maps::{
        Config, Counters, EndpointKey, EndpointValue, FlowKey, GrantKey, GrantValue, PrefixKeyData,
    },
    program_names,
};

use self::pins::{LinkKind, PinDir, PinError, PinnedLinkFile};
use crate::{compile::MapEntries, interfaces::Interface};

/// The kernel object built by `build.rs` (empty when built with `AYA_BUILD_SKIP=1`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portguard-bpf"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this binary was built without its eBPF programs (AYA_BUILD_SKIP): rebuild it")]
    NoObject,
    #[error("load the eBPF object (needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)")]
    Object(#[source] aya::EbpfError),
    #[error("load program {name} into the kernel")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("open map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("attach {program} to {interface}")]
    Attach {
        program: &'static str,
        interface: String,
        #[source]
        source: BoxError,
    },
    #[error("take over the guard pinned at {path} on {interface}")]
    Adopt {
        interface: String,
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    #[error("pin {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    #[error(transparent)]
    Pins(#[from] PinError),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn attach_error<'a>(
    interface: &'a Interface,
    program: &'static str,
) -> impl Fn(BoxError) -> LoadError + 'a {
    move |source| LoadError::Attach {
        program,
        interface: interface.name.clone(),
        source,
    }
}

fn adopt_error<'a>(
    interface: &'a Interface,
    path: &'a Path,
) -> impl Fn(BoxError) -> LoadError + 'a {
    move |source| LoadError::Adopt {
        interface: interface.name.clone(),
        path: path.to_owned(),
        source,
    }
}

/// How the XDP program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// The kernel's choice: native (driver) XDP when the driver has it.
    Native,
    /// Generic XDP, in the network stack: slower, but works on every device.
    Generic,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

/// The guard's programs on one interface, held as kernel links. When the guard is pinned,
/// the links are too, and dropping them leaves the guard in place.
#[derive(Debug)]
pub struct Attachment {
    pub interface: Interface,
    pub mode: AttachMode,
    /// Taken over from an agent before this one (its program replaced on the same link).
    pub adopted: bool,
    /// The kernel's id of the XDP link.
    pub link_id: u32,
    _xdp: FdLink,
    _egress: FdLink,
    pinned: Vec<PathBuf>,
}

/// The loaded kernel side of the guard.
pub struct Guard {
    ebpf: Ebpf,
    pins: Option<PinDir>,
    /// Links pinned by an earlier agent that this one has not adopted (yet).
    unadopted: Vec<PinnedLinkFile>,
    attachments: Vec<Attachment>,
    /// The configuration the pinned maps held when this agent opened them.
    previous: Option<Config>,
    /// This agent's hold on the pin folder.
    _lock: Option<pins::PinLock>,
}

fn missing_map(name: &'static str) -> LoadError {
    LoadError::MissingMap(name)
}

/// A removal that finds the key already gone has done its job.
fn gone(removed: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match removed {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

fn map_error(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoadError {
    move |source| LoadError::Map { name, source }
}

impl Guard {
    /// Loads the object and its programs, with maps of its own; nothing is attached yet and
    /// nothing outlives the guard (tests and benchmarks).
    pub fn load() -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let ebpf = EbpfLoader::new().load(OBJECT).map_err(LoadError::Object)?;
        Self::with_programs(ebpf, None, Vec::new())
    }

    /// Loads the object with its maps pinned under `pin_root`: the maps an earlier agent
    /// pinned there are reused (after checking their layout), and its links are adopted by
    /// [`Guard::attach`]. The guard then outlives this process.
    pub fn open(pin_root: &Path) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        // The layout of this build's maps, from a throwaway load (maps only).
        let specs = {
            let probe = EbpfLoader::new().load(OBJECT).map_err(LoadError::Object)?;
            pins::map_specs(&probe)?
        };
        let pins = PinDir::prepare(pin_root, &specs)?;
        let lock = pins::lock(pin_root)?;
        let unadopted = pins.links()?;
        let paths: Vec<(&'static str, PathBuf)> = map_names::ALL
            .iter()
            .map(|&name| (name, pins.map(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let ebpf = loader.load(OBJECT).map_err(LoadError::Object)?;
        let mut guard = Self::with_programs(ebpf, Some(pins), unadopted)?;
        guard.previous = guard.config().ok().filter(|c| c.generation != 0);
        guard._lock = Some(lock);
        Ok(guard)
    }

    fn with_programs(
        mut ebpf: Ebpf,
        pins: Option<PinDir>,
        unadopted: Vec<PinnedLinkFile>,
    ) -> Result<Self, LoadError> {
        for name in [program_names::XDP_GUARD, program_names::XDP_PASS] {
            let program: &mut Xdp = program_mut(&mut ebpf, name)?;
            program
                .load()
                .map_err(|source| LoadError::Program { name, source })?;
        }
        let egress: &mut SchedClassifier = program_mut(&mut ebpf, program_names::TC_EGRESS)?;
        egress.load().map_err(|source| LoadError::Program {
            name: program_names::TC_EGRESS,
            source,
        })?;
        Ok(Self {
            ebpf,
            pins,
            unadopted,
            attachments: Vec::new(),
            previous: None,
            _lock: None,
        })
    }

    /// The pin folder, when the guard is pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(PinDir::root)
    }

    /// The configuration an earlier agent left in the pinned maps (its mode and generation).
    pub fn previous_config(&self) -> Option<Config> {
        self.previous
    }

    /// Writes a compiled policy into the maps, as a difference against what they hold: new
    /// and changed entries first, stale ones after, the configuration last. Every packet
    /// meets either policy or, for the moment between, their union on the changed ports:
    /// nothing that neither allows, and no port that both allow ever closes.
    pub fn apply(&mut self, entries: &MapEntries) -> Result<(), LoadError> {
        let name = map_names::ENDPOINTS;
        let mut endpoints: HashMap<_, EndpointKey, EndpointValue> =
            HashMap::try_from(self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))?)
                .map_err(map_error(name))?;
        let stale: Vec<EndpointKey> = endpoints
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !entries.endpoints.contains_key(key))
            .collect();
        // Rewriting an unchanged entry is harmless (each update is atomic): one write each.
        for (key, value) in &entries.endpoints {
            endpoints.insert(key, value, 0).map_err(map_error(name))?;
        }

        let prefix_name = map_names::ENDPOINT_PREFIXES;
        let mut prefixes: LpmTrie<_, PrefixKeyData, u32> = LpmTrie::try_from(
            self.ebpf
                .map_mut(prefix_name)
                .ok_or_else(|| missing_map(prefix_name))?,
        )
        .map_err(map_error(prefix_name))?;
        let wanted: std::collections::HashSet<(u32, PrefixKeyData)> = entries
            .prefixes
            .iter()
            .map(|p| (p.prefix_len, p.data))
            .collect();
        let stale_prefixes: Vec<Key<PrefixKeyData>> = prefixes
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !wanted.contains(&(key.prefix_len(), key.data())))
            .collect();
        for prefix in &entries.prefixes {
            let key = Key::new(prefix.prefix_len, prefix.data);
            prefixes
                .insert(&key, prefix.rule, 0)
                .map_err(map_error(prefix_name))?;
        }

        // Now what only the old policy allowed goes.
        for key in &stale_prefixes {
            gone(prefixes.remove(key)).map_err(map_error(prefix_name))?;
        }
        let mut endpoints: HashMap<_, EndpointKey, EndpointValue> =
            HashMap::try_from(self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))?)
                .map_err(map_error(name))?;
        for key in &stale {
            gone(endpoints.remove(key)).map_err(map_error(name))?;
        }

        self.set_config(&entries.config)
    }

    /// Opens a port for a source until the grant's expiry (the kernel enforces it).
    pub fn insert_grant(&mut self, key: &GrantKey, value: &GrantValue) -> Result<(), LoadError> {
        let name = map_names::GRANTS;
        let mut grants: HashMap<_, GrantKey, GrantValue> =
            HashMap::try_from(self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))?)
                .map_err(map_error(name))?;
        grants.insert(key, value, 0).map_err(map_error(name))
    }

    /// Closes a port for a source (the grant was revoked or has expired).
    pub fn remove_grant(&mut self, key: &GrantKey) -> Result<(), LoadError> {
        let name = map_names::GRANTS;
        let mut grants: HashMap<_, GrantKey, GrantValue> =
            HashMap::try_from(self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))?)
                .map_err(map_error(name))?;
        gone(grants.remove(key)).map_err(map_error(name))
    }

    /// Records an outbound UDP flow as the egress program would (tests and benchmarks).
    pub fn insert_udp_flow(&mut self, key: &FlowKey, last_sent_ns: u64) -> Result<(), LoadError> {
        let name = map_names::UDP_FLOWS;
        let mut flows: HashMap<_, FlowKey, u64> =
            HashMap::try_from(self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))?)
                .map_err(map_error(name))?;
        flows.insert(key, last_sent_ns, 0).map_err(map_error(name))
    }

    pub fn set_config(&mut self, config: &Config) -> Result<(), LoadError> {
        let mut array: Array<_, Config> = Array::try_from(
            self.ebpf
                .map_mut(map_names::CONFIG)
                .ok_or_else(|| missing_map(map_names::CONFIG))?,
        )
        .map_err(map_error(map_names::CONFIG))?;
        array
            .set(0, config, 0)
            .map_err(map_error(map_names::CONFIG))
    }

    /// Guards an interface: XDP on ingress (native when the driver has it, else generic)
    /// and the flow recorder on tcx egress (kernel 6.6+). Links an earlier agent pinned for
    /// this interface are adopted: this guard's programs replace theirs on the same links, in
    /// one step each, so that the interface is never unguarded.
    pub fn attach(&mut self, interface: &Interface) -> Result<&Attachment, LoadError> {
        if let Some(at) = self
            .attachments
            .iter()
            .position(|a| a.interface.index == interface.index)
        {
            return Ok(&self.attachments[at]);
        }
        let index = interface.index;
        let pinned_xdp = self.take_unadopted(index, |kind| kind != LinkKind::Egress);
        let pinned_egress = self.take_unadopted(index, |kind| kind == LinkKind::Egress);
        // What is left pinned for this index belonged to an interface that is gone (the
        // index was reused): stale pins, which the new links replace below.
        for stale in self.unadopted.iter().filter(|link| link.ifindex == index) {
            let _ = std::fs::remove_file(&stale.path);
        }
        self.unadopted.retain(|link| link.ifindex != index);
        let adopted = pinned_xdp.is_some();

        let (xdp, mode, xdp_pin) = match pinned_xdp {
            Some(file) => {
                let mode = if file.kind == LinkKind::XdpGeneric {
                    AttachMode::Generic
                } else {
                    AttachMode::Native
                };
                (self.adopt_xdp(interface, &file)?, mode, file.path)
            }
            None => self.attach_xdp(interface)?,
        };
        let egress = match pinned_egress {
            Some(file) => self
                .adopt_egress(interface, &file)
                .map(|link| (link, file.path)),
            None => self.attach_egress(interface),
        };
        let (egress, egress_pin) = match egress {
            Ok(egress) => egress,
            Err(error) => {
                // Never leave a new half guard: without the recorder, replies would be
                // dropped. An adopted XDP link stays: it guarded before this agent came.
                if !adopted {
                    let _ = std::fs::remove_file(&xdp_pin);
                    drop(xdp);
                }
                return Err(error);
            }
        };
        let link_id = xdp.info().map(|info| info.id()).unwrap_or(0);
        let pinned = if self.pins.is_some() {
            vec![xdp_pin, egress_pin]
        } else {
            Vec::new()
        };
        self.attachments.push(Attachment {
            interface: interface.clone(),
            mode,
            adopted,
            link_id,
            _xdp: xdp,
            _egress: egress,
            pinned,
        });
        Ok(self.attachments.last().expect("just pushed"))
    }

    fn take_unadopted(
        &mut self,
        ifindex: u32,
        kind: impl Fn(LinkKind) -> bool,
    ) -> Option<PinnedLinkFile> {
        let at = self
            .unadopted
            .iter()
            .position(|link| link.ifindex == ifindex && link.live && kind(link.kind))?;
        Some(self.unadopted.remove(at))
    }

    fn adopt_xdp(
        &mut self,
        interface: &Interface,
        file: &PinnedLinkFile,
    ) -> Result<FdLink, LoadError> {
        let adopt_error = adopt_error(interface, &file.path);
        let link = PinnedLink::from_pin(&file.path).map_err(|e| adopt_error(e.into()))?;
        let link = XdpLink::try_from(FdLink::from(link)).map_err(|e| adopt_error(e.into()))?;
        let program: &mut Xdp = program_mut(&mut self.ebpf, program_names::XDP_GUARD)?;
        let id = program
            .attach_to_link(link)
            .map_err(|e| adopt_error(e.into()))?;
        let link = program.take_link(id).map_err(|e| adopt_error(e.into()))?;
        FdLink::try_from(link).map_err(|e| adopt_error(e.into()))
    }

    fn adopt_egress(
        &mut self,
        interface: &Interface,
        file: &PinnedLinkFile,
    ) -> Result<FdLink, LoadError> {
        let adopt_error = adopt_error(interface, &file.path);
        let link = PinnedLink::from_pin(&file.path).map_err(|e| adopt_error(e.into()))?;
        let link =
            SchedClassifierLink::try_from(FdLink::from(link)).map_err(|e| adopt_error(e.into()))?;
        let program: &mut SchedClassifier = program_mut(&mut self.ebpf, program_names::TC_EGRESS)?;
        let id = program
            .attach_to_link(link)
            .map_err(|e| adopt_error(e.into()))?;
        let link = program.take_link(id).map_err(|e| adopt_error(e.into()))?;
        FdLink::try_from(link).map_err(|e| adopt_error(e.into()))
    }

    fn attach_xdp(
        &mut self,
        interface: &Interface,
    ) -> Result<(FdLink, AttachMode, PathBuf), LoadError> {
        let attach_error = attach_error(interface, program_names::XDP_GUARD);
        let xdp: &mut Xdp = program_mut(&mut self.ebpf, program_names::XDP_GUARD)?;
        let (id, mode) = match xdp.attach_to_if_index(interface.index, XdpMode::Default) {
            Ok(id) => (id, AttachMode::Native),
            Err(native) => {
                tracing::debug!(interface = %interface.name, error = %native, "native XDP refused, trying generic");
                let id = xdp
                    .attach_to_if_index(interface.index, XdpMode::Skb)
                    .map_err(|e| attach_error(e.into()))?;
                (id, AttachMode::Generic)
            }
        };
        let link = xdp.take_link(id).map_err(|e| attach_error(e.into()))?;
        // Only a kernel link can be pinned (5.9+); aya falls back to netlink before that.
        let link = FdLink::try_from(link).map_err(|_| {
            attach_error(
                "the kernel attached XDP through netlink, which cannot be pinned: portguard \
                 needs XDP links (Linux 5.9 or newer)"
                    .into(),
            )
        })?;
        let kind = match mode {
            AttachMode::Native => LinkKind::XdpNative,
            AttachMode::Generic => LinkKind::XdpGeneric,
        };
        let (link, path) = self.pin_link(interface, link, kind)?;
        Ok((link, mode, path))
    }

    fn attach_egress(&mut self, interface: &Interface) -> Result<(FdLink, PathBuf), LoadError> {
        let attach_error = attach_error(interface, program_names::TC_EGRESS);
        let egress: &mut SchedClassifier = program_mut(&mut self.ebpf, program_names::TC_EGRESS)?;
        let id = egress
            .attach(&interface.name, TcAttachType::Egress)
            .map_err(|e| attach_error(e.into()))?;
        let link = egress.take_link(id).map_err(|e| attach_error(e.into()))?;
        // tcx links (6.6+) only: a netlink tc filter cannot be pinned.
        let link = FdLink::try_from(link).map_err(|_| {
            attach_error(
                "the kernel attached the egress program as a tc filter, which cannot be \
                 pinned: portguard needs tcx links (Linux 6.6 or newer)"
                    .into(),
            )
        })?;
        self.pin_link(interface, link, LinkKind::Egress)
    }

    /// Pins a new link, when the guard is pinned; a stale pin of the same name (its
    /// interface gone) is replaced.
    fn pin_link(
        &self,
        interface: &Interface,
        link: FdLink,
        kind: LinkKind,
    ) -> Result<(FdLink, PathBuf), LoadError> {
        let Some(pins) = &self.pins else {
            return Ok((link, PathBuf::new()));
        };
        let path = pins.link(interface.index, kind);
        let _ = std::fs::remove_file(&path);
        let pinned = link.pin(&path).map_err(|e| LoadError::Pin {
            path: path.clone(),
            source: e.into(),
        })?;
        Ok((FdLink::from(pinned), path))
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Lets go of an interface that no longer exists: its links are unpinned and closed.
    pub fn forget(&mut self, index: u32) -> Option<Interface> {
        let at = self
            .attachments
            .iter()
            .position(|a| a.interface.index == index)?;
        let attachment = self.attachments.remove(at);
        for path in &attachment.pinned {
            let _ = std::fs::remove_file(path);
        }
        self.unadopted.retain(|link| link.ifindex != index);
        Some(attachment.interface)
    }

    /// Unpins the links an earlier agent left that this one did not adopt: interfaces the
    /// policy no longer names, or that are gone. Returns their interface indexes.
    pub fn release_unadopted(&mut self) -> Vec<u32> {
        let mut released: Vec<u32> = Vec::new();
        for link in std::mem::take(&mut self.unadopted) {
            if let Err(error) = std::fs::remove_file(&link.path) {
                tracing::warn!(path = %link.path.display(), %error, "unpin a link");
            }
            if !released.contains(&link.ifindex) {
                released.push(link.ifindex);
            }
        }
        released
    }

    /// Once every link runs this guard's programs: pins the programs (replacing an earlier
    /// agent's) and removes the maps of other layouts, which nothing uses any more.
    pub fn finish_pinning(&mut self) -> Result<Vec<PathBuf>, LoadError> {
        let Some(pins) = self.pins.clone() else {
            return Ok(Vec::new());
        };
        for name in [program_names::XDP_GUARD, program_names::TC_EGRESS] {
            let path = pins.program(name);
            let _ = std::fs::remove_file(&path);
            let program = self
                .ebpf
                .program_mut(name)
                .ok_or(LoadError::MissingProgram(name))?;
            let pinned = match program {
                aya::programs::Program::Xdp(p) => p.pin(&path),
                aya::programs::Program::SchedClassifier(p) => p.pin(&path),
                _ => return Err(LoadError::MissingProgram(name)),
            };
            pinned.map_err(|e| LoadError::Pin {
                path: path.clone(),
                source: e.into(),
            })?;
        }
        let mut removed = Vec::new();
        for layout in pins.other_layouts() {
            removed.extend(pins::remove_folder(&layout)?);
        }
        Ok(removed)
    }

    /// The kernel's ids of the XDP guard and the egress recorder.
    pub fn program_ids(&mut self) -> Result<(u32, u32), LoadError> {
        let xdp: &mut Xdp = program_mut(&mut self.ebpf, program_names::XDP_GUARD)?;
        let program_error = |name| move |source| LoadError::Program { name, source };
        let xdp = xdp
            .info()
            .map_err(program_error(program_names::XDP_GUARD))?
            .id();
        let egress: &mut SchedClassifier = program_mut(&mut self.ebpf, program_names::TC_EGRESS)?;
        let egress = egress
            .info()
            .map_err(program_error(program_names::TC_EGRESS))?
            .id();
        Ok((xdp, egress))
    }

    /// The configuration the kernel holds now.
    pub fn config(&self) -> Result<Config, LoadError> {
        let name = map_names::CONFIG;
        let array: Array<_, Config> =
            Array::try_from(self.ebpf.map(name).ok_or_else(|| missing_map(name))?)
                .map_err(map_error(name))?;
        array.get(&0, 0).map_err(map_error(name))
    }

    /// Detaches from every interface (unpinning), returning the ones left.
    pub fn detach_all(&mut self) -> Vec<Interface> {
        let indexes: Vec<u32> = self.attachments.iter().map(|a| a.interface.index).collect();
        indexes
            .into_iter()
            .filter_map(|index| self.forget(index))
            .collect()
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, LoadError> {
        let name = map_names::COUNTERS;
        let array: PerCpuArray<_, Counters> =
            PerCpuArray::try_from(self.ebpf.map(name).ok_or_else(|| missing_map(name))?)
                .map_err(map_error(name))?;
        let per_cpu = array.get(&0, 0).map_err(map_error(name))?;
        let mut total = Counters::default();
        for cpu in per_cpu.iter() {
            total.add(cpu);
        }
        Ok(total)
    }

    /// The event ring buffer, taken out for a reader.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let name = map_names::EVENTS;
        let map = self.ebpf.take_map(name).ok_or_else(|| missing_map(name))?;
        RingBuf::try_from(map).map_err(map_error(name))
    }

    /// The loaded object, for tests and benchmarks that run programs directly.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, LoadError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?;
    program
        .try_into()
        .map_err(|_| LoadError::MissingProgram(name))
}
