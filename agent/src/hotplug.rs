//! Interface hot-plug: follows the kernel's link notifications (rtnetlink, `RTNLGRP_LINK`) so
//! that an interface that appears after start is guarded when the policy wants it, and one
//! that goes away is forgotten.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::Duration,
};

use futures_util::{StreamExt as _, TryStreamExt as _};
use portguard_common::maps::MODE_MONITOR;
use rtnetlink::{
    Handle, MulticastGroup,
    packet_core::NetlinkPayload,
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        link::{LinkAttribute, LinkFlags, LinkMessage},
    },
};
use tokio::task::JoinSet;

use crate::{
    engine::SharedEngine,
    events::{Event, EventLog},
    interfaces::Interface,
    loader::Guard,
    policy::Interfaces,
};

/// How long to wait before subscribing again when the netlink socket failed.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);
/// `ENODEV`: the kernel's answer about an interface index that no longer exists.
const ENODEV: i32 = 19;

/// Interface names by index, shared with the flow reader, which names interfaces in events.
pub type InterfaceNames = Arc<RwLock<HashMap<u32, String>>>;

/// What one link message says about an interface of this network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    /// The interface exists: it is new, or something about it changed (`RTM_NEWLINK` is sent
    /// for every flag and state change too), or it is a line of a dump.
    Present {
        interface: Interface,
        loopback: bool,
    },
    /// The interface left this namespace: deleted, or moved to another (`RTM_DELLINK`).
    Gone { index: u32 },
}

/// What the watcher does about a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A wanted interface that the guard does not hold yet.
    Attach(Interface),
    /// A guarded interface now has another name.
    Rename(Interface),
    /// A guarded interface is gone: drop what the guard held for it.
    Forget(u32),
}

#[derive(Debug, thiserror::Error)]
pub enum HotplugError {
    #[error("subscribe to the kernel's link notifications")]
    Subscribe(#[source] std::io::Error),
    #[error("list the network interfaces over netlink")]
    List(#[source] rtnetlink::Error),
    #[error("the netlink socket closed")]
    Closed,
}

/// The change a route netlink message describes, if it is about a network device.
pub fn link_change(message: &RouteNetlinkMessage) -> Option<LinkChange> {
    match message {
        RouteNetlinkMessage::NewLink(link) => present(link),
        RouteNetlinkMessage::DelLink(link) if is_device(link) => Some(LinkChange::Gone {
            index: link.header.index,
        }),
        _ => None,
    }
}

/// A new or changed link, or a line of a link dump, as a present interface.
pub fn present(link: &LinkMessage) -> Option<LinkChange> {
    if !is_device(link) {
        return None;
    }
    let name = link
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })?;
    Some(LinkChange::Present {
        interface: Interface {
            name,
            index: link.header.index,
        },
        loopback: link.header.flags.contains(LinkFlags::Loopback),
    })
}

/// Whether a link message is about the device itself. A bridge sends `AF_BRIDGE` link
/// messages about its ports, a `RTM_DELLINK` among them when a port leaves the bridge: the
/// port itself is still there.
fn is_device(link: &LinkMessage) -> bool {
    link.header.interface_family == AddressFamily::Unspec
}

/// What to do about `change`, given the interfaces the policy wants and those the guard
/// holds now (with their current names). Loopback is never guarded; a guarded interface
/// stays guarded whatever it is renamed to.
pub fn plan(change: LinkChange, wanted: &Interfaces, guarded: &[Interface]) -> Option<Action> {
    match change {
        LinkChange::Gone { index } => guarded
            .iter()
            .any(|held| held.index == index)
            .then_some(Action::Forget(index)),
        LinkChange::Present { loopback: true, .. } => None,
        LinkChange::Present { interface, .. } => {
            match guarded.iter().find(|held| held.index == interface.index) {
                Some(held) if held.name == interface.name => None,
                Some(_) => Some(Action::Rename(interface)),
                None if wants(wanted, &interface.name) => Some(Action::Attach(interface)),
                None => None,
            }
        }
    }
}

/// The guarded interfaces missing from a complete dump of the links: their `RTM_DELLINK`
/// was missed (before the subscription, or when the socket's buffer overflowed).
pub fn missing(dumped: &[LinkChange], guarded: &[Interface]) -> Vec<u32> {
    let present: HashSet<u32> = dumped
        .iter()
        .filter_map(|change| match change {
            LinkChange::Present { interface, .. } => Some(interface.index),
            LinkChange::Gone { .. } => None,
        })
        .collect();
    guarded
        .iter()
        .map(|held| held.index)
        .filter(|index| !present.contains(index))
        .collect()
}

fn wants(wanted: &Interfaces, name: &str) -> bool {
    match wanted {
        Interfaces::All => true,
        Interfaces::Named(names) => names.iter().any(|wanted| wanted == name),
    }
}

/// Follows the interfaces of the agent's network namespace until the task is aborted: guards
/// those that appear when the policy wants them (every one for `*`, a named one when it
/// comes back), and forgets those that go away. Logs `guard.attached` (with `hotplug`),
/// `guard.attach_failed` and `guard.detached`; a failure never stops the watcher.
pub async fn watch(engine: SharedEngine, log: EventLog, names: InterfaceNames, wanted: Interfaces) {
    let watcher = Watcher {
        engine,
        log,
        names,
        wanted,
    };
    loop {
        let Err(error) = watcher.follow().await;
        tracing::warn!(
            error = %anyhow::Error::from(error),
            "following interface changes stopped, subscribing again"
        );
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

struct Watcher {
    engine: SharedEngine,
    log: EventLog,
    names: InterfaceNames,
    wanted: Interfaces,
}

impl Watcher {
    /// Subscribes, catches up with a dump, then applies each notification until the socket
    /// fails.
    async fn follow(&self) -> Result<std::convert::Infallible, HotplugError> {
        let (connection, handle, mut messages) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
                .map_err(HotplugError::Subscribe)?;
        // Dropping the set aborts the connection with this future.
        let mut connection_task = JoinSet::new();
        connection_task.spawn(connection);

        // Subscribed first, listed second: whatever changed since the agent resolved its
        // interfaces is either in the dump or still queued on the socket.
        self.resync(&handle).await?;

        while let Some((message, _)) = messages.next().await {
            match message.payload {
                NetlinkPayload::InnerMessage(message) => {
                    if let Some(change) = link_change(&message) {
                        self.apply(change);
                    }
                }
                NetlinkPayload::Overrun(_) => {
                    tracing::warn!("missed interface changes (netlink buffer full), listing again");
                    self.resync(&handle).await?;
                }
                _ => {}
            }
        }
        Err(HotplugError::Closed)
    }

    /// Lists the links and applies them as changes; forgets guarded interfaces the list lacks
    /// once the kernel confirms they are gone.
    async fn resync(&self, handle: &Handle) -> Result<(), HotplugError> {
        let dumped: Vec<LinkChange> = handle
            .link()
            .get()
            .execute()
            .try_filter_map(|link| async move { Ok(present(&link)) })
            .try_collect()
            .await
            .map_err(HotplugError::List)?;

        let guarded = self.guarded();
        for change in dumped.iter().cloned() {
            self.apply(change);
        }

        for index in missing(&dumped, &guarded) {
            // A dump that raced with changes may lack an interface: forgetting one that is
            // still there would leave it unguarded.
            if is_gone(handle, index).await {
                self.apply(LinkChange::Gone { index });
            }
        }
        tracing::debug!(links = dumped.len(), "listed interfaces");
        Ok(())
    }

    /// Plans and acts under one hold of the engine, then logs.
    fn apply(&self, change: LinkChange) {
        let mut engine = self.engine.lock();
        let Some(guard) = engine.kernel.guard_mut() else {
            return;
        };
        let guarded = guarded(guard, &self.names);
        let Some(action) = plan(change, &self.wanted, &guarded) else {
            return;
        };
        let event = self.act(guard, action);
        drop(engine);

        if let Some(event) = event {
            self.log.emit(event);
        }
    }

    fn act(&self, guard: &mut Guard, action: Action) -> Option<Event> {
        match action {
            Action::Attach(interface) => Some(self.attach(guard, &interface)),
            Action::Rename(interface) => {
                tracing::info!(interface = %interface.name, ifindex = interface.index, "guarded interface renamed");
                self.names_mut().insert(interface.index, interface.name);
                None
            }
            Action::Forget(index) => {
                let known = self.names_mut().remove(&index);
                let forgotten = guard.forget(index);
                let name = forgotten.map(|interface| interface.name).or(known);
                Some(
                    Event::new("guard.detached")
                        .with("interface", name)
                        .with("ifindex", index)
                        .with("reason", "interface_removed"),
                )
            }
        }
    }

    fn attach(&self, guard: &mut Guard, interface: &Interface) -> Event {
        match guard.attach(interface) {
            Ok(_) => {
                // The mode in force now, as a reload may have changed it since the start.
                let mode = match guard.config() {
                    Ok(config) if config.mode == MODE_MONITOR => "monitor",
                    Ok(_) => "enforce",
                    Err(_) => "unknown",
                };
                let attachment = guard
                    .attachments()
                    .iter()
                    .find(|a| a.interface.index == interface.index)
                    .expect("just attached");
                let event = crate::run::attached(attachment, mode).with("hotplug", true);
                self.names_mut()
                    .insert(interface.index, interface.name.clone());
                event
            }
            Err(error) => {
                let error = format!("{:#}", anyhow::Error::from(error));
                tracing::warn!(interface = %interface.name, %error, "attach the guard to a new interface");
                Event::new("guard.attach_failed")
                    .with("interface", &interface.name)
                    .with("ifindex", interface.index)
                    .with("error", error)
                    .with("hotplug", true)
            }
        }
    }

    /// The interfaces the guard holds now, with their current names.
    fn guarded(&self) -> Vec<Interface> {
        let mut engine = self.engine.lock();
        engine
            .kernel
            .guard_mut()
            .map(|guard| guarded(guard, &self.names))
            .unwrap_or_default()
    }

    fn names_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, String>> {
        self.names
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The guard's interfaces, named as the shared map names them (renames included).
fn guarded(guard: &Guard, names: &InterfaceNames) -> Vec<Interface> {
    let names = names
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    guard
        .attachments()
        .iter()
        .map(|attachment| Interface {
            index: attachment.interface.index,
            name: names
                .get(&attachment.interface.index)
                .cloned()
                .unwrap_or_else(|| attachment.interface.name.clone()),
        })
        .collect()
}

/// Whether the kernel says no interface has this index any more.
async fn is_gone(handle: &Handle, index: u32) -> bool {
    let mut found = handle.link().get().match_index(index).execute();
    match found.try_next().await {
        Err(rtnetlink::Error::NetlinkError(message)) => message.raw_code() == -ENODEV,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, flags: LinkFlags) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = flags;
        link.attributes.push(LinkAttribute::IfName(name.to_owned()));
        link
    }

    fn interface(index: u32, name: &str) -> Interface {
        Interface {
            name: name.to_owned(),
            index,
        }
    }

    fn new_link(index: u32, name: &str) -> RouteNetlinkMessage {
        RouteNetlinkMessage::NewLink(link(index, name, LinkFlags::Up | LinkFlags::Broadcast))
    }

    fn planned(
        message: &RouteNetlinkMessage,
        wanted: &Interfaces,
        guarded: &[Interface],
    ) -> Option<Action> {
        plan(link_change(message)?, wanted, guarded)
    }

    #[test]
    fn new_interface_is_attached_when_the_policy_says_all() {
        let guarded = [interface(2, "eth0")];
        let action = planned(&new_link(9, "veth-new"), &Interfaces::All, &guarded);
        assert_eq!(action, Some(Action::Attach(interface(9, "veth-new"))));
    }

    #[test]
    fn new_loopback_is_never_attached() {
        let loopback =
            RouteNetlinkMessage::NewLink(link(1, "lo", LinkFlags::Up | LinkFlags::Loopback));
        assert_eq!(
            link_change(&loopback),
            Some(LinkChange::Present {
                interface: interface(1, "lo"),
                loopback: true
            })
        );
        assert_eq!(planned(&loopback, &Interfaces::All, &[]), None);
        let named = Interfaces::Named(vec!["lo".into()]);
        assert_eq!(planned(&loopback, &named, &[]), None);
    }

    #[test]
    fn repeated_newlink_of_a_guarded_interface_does_nothing() {
        let guarded = [interface(9, "veth-new")];
        // Going down, then up again: each is another RTM_NEWLINK for the same index.
        let down = RouteNetlinkMessage::NewLink(link(9, "veth-new", LinkFlags::Broadcast));
        assert_eq!(planned(&down, &Interfaces::All, &guarded), None);
        assert_eq!(
            planned(&new_link(9, "veth-new"), &Interfaces::All, &guarded),
            None
        );
    }

    #[test]
    fn dellink_of_a_guarded_interface_forgets_it() {
        let deleted = RouteNetlinkMessage::DelLink(link(9, "veth-new", LinkFlags::empty()));
        assert_eq!(link_change(&deleted), Some(LinkChange::Gone { index: 9 }));
        let guarded = [interface(2, "eth0"), interface(9, "veth-new")];
        assert_eq!(
            planned(&deleted, &Interfaces::All, &guarded),
            Some(Action::Forget(9))
        );
    }

    #[test]
    fn dellink_of_an_unguarded_interface_does_nothing() {
        let deleted = RouteNetlinkMessage::DelLink(link(9, "veth-new", LinkFlags::empty()));
        assert_eq!(
            planned(&deleted, &Interfaces::All, &[interface(2, "eth0")]),
            None
        );
    }

    #[test]
    fn bridge_port_messages_are_not_about_the_device() {
        let mut left_bridge = link(9, "veth-new", LinkFlags::Up);
        left_bridge.header.interface_family = AddressFamily::Bridge;
        assert_eq!(
            link_change(&RouteNetlinkMessage::DelLink(left_bridge.clone())),
            None
        );
        assert_eq!(
            link_change(&RouteNetlinkMessage::NewLink(left_bridge)),
            None
        );
    }

    #[test]
    fn link_without_a_name_is_ignored() {
        let mut nameless = LinkMessage::default();
        nameless.header.index = 9;
        assert_eq!(link_change(&RouteNetlinkMessage::NewLink(nameless)), None);
    }

    #[test]
    fn named_interface_is_attached_again_when_it_comes_back() {
        let wanted = Interfaces::Named(vec!["eth1".into()]);
        assert_eq!(
            planned(&new_link(12, "eth1"), &wanted, &[interface(2, "eth0")]),
            Some(Action::Attach(interface(12, "eth1")))
        );
        assert_eq!(planned(&new_link(13, "veth-other"), &wanted, &[]), None);
    }

    #[test]
    fn renamed_guarded_interface_is_renamed_not_attached_again() {
        let guarded = [interface(9, "veth-new")];
        assert_eq!(
            planned(&new_link(9, "uplink"), &Interfaces::All, &guarded),
            Some(Action::Rename(interface(9, "uplink")))
        );
    }

    #[test]
    fn dump_without_a_guarded_interface_reports_it_missing() {
        let dumped = [
            LinkChange::Present {
                interface: interface(1, "lo"),
                loopback: true,
            },
            LinkChange::Present {
                interface: interface(2, "eth0"),
                loopback: false,
            },
        ];
        let guarded = [interface(2, "eth0"), interface(9, "veth-new")];
        assert_eq!(missing(&dumped, &guarded), vec![9]);
    }
}
