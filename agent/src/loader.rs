//! Loads the kernel programs, fills their maps from compiled policy entries, and attaches
//! them to interfaces: the XDP guard on ingress and the UDP flow recorder on tcx egress.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode, tc::SchedClassifierLinkId, xdp::XdpLinkId,
    },
};
use portguard_common::{
    map_names,
    maps::{
        Config, Counters, EndpointKey, EndpointValue, FlowKey, GrantKey, GrantValue, PrefixKeyData,
    },
    program_names,
};

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
        source: aya::programs::ProgramError,
    },
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

/// The guard's programs on one interface.
#[derive(Debug)]
pub struct Attachment {
    pub interface: Interface,
    pub mode: AttachMode,
    xdp: XdpLinkId,
    egress: SchedClassifierLinkId,
}

/// The loaded kernel side of the guard.
pub struct Guard {
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
}

fn missing_map(name: &'static str) -> LoadError {
    LoadError::MissingMap(name)
}

fn map_error(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoadError {
    move |source| LoadError::Map { name, source }
}

impl Guard {
    /// Loads the object and its programs; nothing is attached yet.
    pub fn load() -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(LoadError::Object)?;

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
            attachments: Vec::new(),
        })
    }

    /// Writes a compiled policy into the maps: configuration last, so that a packet never
    /// meets a mode whose endpoints are not there yet.
    pub fn apply(&mut self, entries: &MapEntries) -> Result<(), LoadError> {
        let mut endpoints: HashMap<_, EndpointKey, EndpointValue> = HashMap::try_from(
            self.ebpf
                .map_mut(map_names::ENDPOINTS)
                .ok_or_else(|| missing_map(map_names::ENDPOINTS))?,
        )
        .map_err(map_error(map_names::ENDPOINTS))?;
        for (key, value) in &entries.endpoints {
            endpoints
                .insert(key, value, 0)
                .map_err(map_error(map_names::ENDPOINTS))?;
        }

        let mut prefixes: LpmTrie<_, PrefixKeyData, u32> = LpmTrie::try_from(
            self.ebpf
                .map_mut(map_names::ENDPOINT_PREFIXES)
                .ok_or_else(|| missing_map(map_names::ENDPOINT_PREFIXES))?,
        )
        .map_err(map_error(map_names::ENDPOINT_PREFIXES))?;
        for prefix in &entries.prefixes {
            let key = Key::new(prefix.prefix_len, prefix.data);
            prefixes
                .insert(&key, prefix.rule, 0)
                .map_err(map_error(map_names::ENDPOINT_PREFIXES))?;
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
        match grants.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(error) => Err(map_error(name)(error)),
        }
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

    /// Attaches the guard to an interface: XDP on ingress (native when the driver has it,
    /// else generic) and the flow recorder on tcx egress (kernel 6.6+).
    pub fn attach(&mut self, interface: &Interface) -> Result<&Attachment, LoadError> {
        let attach_error = |program, source| LoadError::Attach {
            program,
            interface: interface.name.clone(),
            source,
        };

        let xdp: &mut Xdp = program_mut(&mut self.ebpf, program_names::XDP_GUARD)?;
        let (xdp, mode) = match xdp.attach_to_if_index(interface.index, XdpMode::Default) {
            Ok(id) => (id, AttachMode::Native),
            Err(native) => {
                tracing::debug!(interface = %interface.name, error = %native, "native XDP refused, trying generic");
                let id = xdp
                    .attach_to_if_index(interface.index, XdpMode::Skb)
                    .map_err(|source| attach_error(program_names::XDP_GUARD, source))?;
                (id, AttachMode::Generic)
            }
        };

        let egress: &mut SchedClassifier = program_mut(&mut self.ebpf, program_names::TC_EGRESS)?;
        let egress = match egress.attach(&interface.name, TcAttachType::Egress) {
            Ok(id) => id,
            Err(source) => {
                // Never leave half a guard: without the recorder, replies would be dropped.
                let xdp_program: &mut Xdp = program_mut(&mut self.ebpf, program_names::XDP_GUARD)?;
                let _ = xdp_program.detach(xdp);
                return Err(attach_error(program_names::TC_EGRESS, source));
            }
        };

        self.attachments.push(Attachment {
            interface: interface.clone(),
            mode,
            xdp,
            egress,
        });
        Ok(self.attachments.last().expect("just pushed"))
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
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

    /// Detaches from every interface, returning the ones left.
    pub fn detach_all(&mut self) -> Vec<Interface> {
        let mut detached = Vec::new();
        for attachment in std::mem::take(&mut self.attachments) {
            if let Ok(xdp) = program_mut::<Xdp>(&mut self.ebpf, program_names::XDP_GUARD)
                && let Err(error) = xdp.detach(attachment.xdp)
            {
                tracing::warn!(interface = %attachment.interface.name, %error, "detach XDP");
            }
            if let Ok(egress) =
                program_mut::<SchedClassifier>(&mut self.ebpf, program_names::TC_EGRESS)
                && let Err(error) = egress.detach(attachment.egress)
            {
                tracing::warn!(interface = %attachment.interface.name, %error, "detach tcx egress");
            }
            detached.push(attachment.interface);
        }
        detached
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
            for (sum, count) in total.packets.iter_mut().zip(cpu.packets.iter()) {
                *sum += count;
            }
            total.events_lost += cpu.events_lost;
            total.events_suppressed += cpu.events_suppressed;
            total.udp_flows_recorded += cpu.udp_flows_recorded;
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
