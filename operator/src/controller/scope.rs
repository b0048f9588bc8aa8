//! Which namespaces the operator watches: every namespace (one watch per kind over the cluster,
//! granted by a ClusterRole), or a list of namespaces (one watch per kind and namespace, granted
//! by a Role in each: `--watch-namespaces`).
//!
//! A reflector store takes one stream of watcher events, and kube's [`reflector::store::Writer`]
//! treats every `Init` … `InitDone` as a complete listing that replaces its whole content. The
//! watches of several namespaces list independently (at start, and again whenever one of them
//! has to re-list after a lost watch), so their events cannot simply be interleaved: one
//! namespace's re-list would empty the store of every other. [`merge`] turns the per-namespace
//! streams into one stream with the meaning of a single watch over the namespaces together: one
//! initial listing, once every namespace has listed; afterwards only `Apply` and `Delete`, where a
//! namespace's re-list becomes an `Apply` per object and a `Delete` per object that is gone.
//!
//! [`reflector::store::Writer`]: kube::runtime::reflector::store::Writer

use std::collections::{BTreeSet, HashMap};

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event, watcher as watch};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// The namespaces the operator watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace.
    Cluster,
    /// These namespaces only (at least one).
    Namespaces(BTreeSet<String>),
}

/// A namespace name that is not a DNS-1123 label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--watch-namespaces: {0:?} is not a namespace name (lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)"
)]
pub struct InvalidNamespace(pub String);

impl WatchScope {
    /// The scope of a list of namespaces as given on the command line: empty items are ignored,
    /// duplicates count once, and no namespace at all means every namespace.
    pub fn from_list<I, S>(namespaces: I) -> Result<Self, InvalidNamespace>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for namespace in namespaces {
            let namespace = namespace.as_ref().trim();
            if namespace.is_empty() {
                continue;
            }
            if !is_dns_label(namespace) {
                return Err(InvalidNamespace(namespace.to_owned()));
            }
            set.insert(namespace.to_owned());
        }
        Ok(if set.is_empty() {
            Self::Cluster
        } else {
            Self::Namespaces(set)
        })
    }

    /// Whether objects in `namespace` are watched.
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Self::Cluster => true,
            Self::Namespaces(namespaces) => namespaces.contains(namespace),
        }
    }

    /// One `Api` per watched namespace (one over every namespace for [`WatchScope::Cluster`]).
    fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match self {
            Self::Cluster => vec![Api::all(client.clone())],
            Self::Namespaces(namespaces) => namespaces
                .iter()
                .map(|namespace| Api::namespaced(client.clone(), namespace))
                .collect(),
        }
    }

    /// One watcher per `Api` of [`WatchScope::apis`], each with kube's default back-off.
    fn watchers<K: Watchable>(
        &self,
        client: &Client,
        config: &watcher::Config,
    ) -> Vec<BoxStream<'static, Result<Event<K>, watcher::Error>>> {
        self.apis::<K>(client)
            .into_iter()
            .map(|api| watch(api, config.clone()).default_backoff().boxed())
            .collect()
    }

    /// The watcher events of `K` in the scope, with the meaning of one watch (for a reflector
    /// store): see [`merge`].
    pub fn events<K: Watchable>(
        &self,
        client: &Client,
        config: &watcher::Config,
    ) -> BoxStream<'static, Result<Event<K>, watcher::Error>> {
        let mut watches = self.watchers::<K>(client, config);
        if watches.len() == 1 {
            return watches.remove(0);
        }
        merge(watches).boxed()
    }

    /// The raw watcher events of `K`, every namespace's interleaved (for filters that look at
    /// single objects, never at listings).
    pub fn raw_events<K: Watchable>(
        &self,
        client: &Client,
        config: &watcher::Config,
    ) -> BoxStream<'static, Result<Event<K>, watcher::Error>> {
        stream::select_all(self.watchers::<K>(client, config)).boxed()
    }

    /// The objects of `K` in the scope that were created, changed or deleted, for a controller's
    /// `owns_stream` or `watches_stream` (which need no consistent listing).
    pub fn touched<K: Watchable>(
        &self,
        client: &Client,
        config: &watcher::Config,
    ) -> BoxStream<'static, Result<K, watcher::Error>> {
        self.raw_events::<K>(client, config).touched_objects().boxed()
    }
}

/// A namespaced kind the operator can watch per namespace.
pub trait Watchable:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watchable for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Whether `name` is a DNS-1123 label (a namespace name).
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// The events of several watches (one per namespace) as those of one watch over all of them:
///
/// - `Init`, an `InitApply` for every object of every namespace, and `InitDone`, once, when
///   every namespace has listed for the first time (until then nothing else is passed on);
/// - afterwards each `Apply` and `Delete` as it comes; a namespace that lists again (its watch
///   was lost) gives an `Apply` for every object it lists and, when its listing is done, a
///   `Delete` for every object it had before that the new listing lacks;
/// - errors as they come (each watch retries with its own back-off).
///
/// Pure over the streams: it keeps, per namespace, the last version of every object seen, which
/// is what the deletions of a re-list are made of.
pub fn merge<K, S>(watches: Vec<S>) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()> + Clone + Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + Unpin + 'static,
{
    let mut state = Merge::<K>::new(watches.len());
    stream::select_all(
        watches
            .into_iter()
            .enumerate()
            .map(|(index, events)| events.map(move |event| (index, event))),
    )
    .flat_map(move |(index, event)| stream::iter(state.next(index, event)))
}

/// The state of [`merge`].
struct Merge<K: Resource<DynamicType = ()>> {
    parts: Vec<Part<K>>,
    /// Whether the merged listing has been passed on.
    initialized: bool,
}

/// What [`merge`] knows of one namespace's watch.
struct Part<K: Resource<DynamicType = ()>> {
    /// Every object the watch has, by key.
    objects: HashMap<ObjectRef<K>, K>,
    /// The objects of a listing in progress.
    listing: Option<HashMap<ObjectRef<K>, K>>,
    /// Whether it has listed once.
    listed: bool,
}

impl<K: Resource<DynamicType = ()> + Clone> Merge<K> {
    fn new(parts: usize) -> Self {
        Self {
            parts: (0..parts)
                .map(|_| Part {
                    objects: HashMap::new(),
                    listing: None,
                    listed: false,
                })
                .collect(),
            initialized: false,
        }
    }

    /// The merged events for `event` of watch `index`.
    fn next(&mut self, index: usize, event: Result<Event<K>, watcher::Error>) -> Vec<Result<Event<K>, watcher::Error>> {
        let event = match event {
            Ok(event) => event,
            Err(error) => return vec![Err(error)],
        };
        let initialized = self.initialized;
        let part = &mut self.parts[index];
        let mut out = Vec::new();
        match event {
            Event::Init => part.listing = Some(HashMap::new()),
            Event::InitApply(object) => {
                part.listing
                    .get_or_insert_with(HashMap::new)
                    .insert(ObjectRef::from_obj(&object), object.clone());
                if initialized {
                    out.push(Ok(Event::Apply(object)));
                }
            }
            Event::InitDone => {
                let listed = part.listing.take().unwrap_or_default();
                let before = std::mem::replace(&mut part.objects, listed);
                if initialized {
                    out.extend(
                        before
                            .into_iter()
                            .filter(|(key, _)| !part.objects.contains_key(key))
                            .map(|(_, gone)| Ok(Event::Delete(gone))),
                    );
                }
                part.listed = true;
                if !initialized && self.parts.iter().all(|p| p.listed) {
                    self.initialized = true;
                    out.push(Ok(Event::Init));
                    out.extend(
                        self.parts
                            .iter()
                            .flat_map(|p| p.objects.values().cloned())
                            .map(|object| Ok(Event::InitApply(object))),
                    );
                    out.push(Ok(Event::InitDone));
                }
            }
            Event::Apply(object) => {
                part.objects.insert(ObjectRef::from_obj(&object), object.clone());
                if initialized {
                    out.push(Ok(Event::Apply(object)));
                }
            }
            Event::Delete(object) => {
                part.objects.remove(&ObjectRef::from_obj(&object));
                if initialized {
                    out.push(Ok(Event::Delete(object)));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector;

    use super::*;

    fn cm(namespace: &str, name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    /// Runs `events` (watch index, event) through [`Merge`] into a store, and returns the store's
    /// content as sorted `namespace/name@version`, and whether it is ready.
    fn replay(parts: usize, events: Vec<(usize, Event<ConfigMap>)>) -> (Vec<String>, bool, Vec<String>) {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let mut merge = Merge::new(parts);
        let mut passed = Vec::new();
        for (index, event) in events {
            for merged in merge.next(index, Ok(event)) {
                let merged = merged.expect("no error");
                passed.push(match &merged {
                    Event::Init => "Init".to_owned(),
                    Event::InitDone => "InitDone".to_owned(),
                    Event::InitApply(o) => format!("InitApply {}", o.metadata.name.as_deref().unwrap_or_default()),
                    Event::Apply(o) => format!("Apply {}", o.metadata.name.as_deref().unwrap_or_default()),
                    Event::Delete(o) => format!("Delete {}", o.metadata.name.as_deref().unwrap_or_default()),
                });
                writer.apply_watcher_event(&merged);
            }
        }
        let mut content: Vec<String> = store
            .state()
            .iter()
            .map(|o| {
                format!(
                    "{}/{}@{}",
                    o.metadata.namespace.as_deref().unwrap_or_default(),
                    o.metadata.name.as_deref().unwrap_or_default(),
                    o.metadata.resource_version.as_deref().unwrap_or_default()
                )
            })
            .collect();
        content.sort();
        let ready = store.wait_until_ready().now_or_never().is_some();
        (content, ready, passed)
    }

    #[test]
    fn the_store_is_ready_only_once_every_namespace_has_listed_and_holds_all_of_them() {
        let listing_a = vec![
            (0, Event::Init),
            (0, Event::InitApply(cm("a", "one", "1"))),
            (0, Event::InitDone),
        ];
        let (content, ready, _) = replay(2, listing_a.clone());
        assert_eq!((content, ready), (Vec::<String>::new(), false), "b has not listed");

        let mut both = listing_a;
        // Changes in a before b has listed are part of the first listing.
        both.push((0, Event::Apply(cm("a", "two", "2"))));
        both.push((1, Event::Init));
        both.push((1, Event::InitApply(cm("b", "one", "3"))));
        both.push((0, Event::Delete(cm("a", "one", "1"))));
        both.push((1, Event::InitDone));
        let (content, ready, passed) = replay(2, both);
        assert_eq!(content, ["a/two@2", "b/one@3"]);
        assert!(ready);
        assert_eq!(passed.first().map(String::as_str), Some("Init"));
        assert_eq!(passed.last().map(String::as_str), Some("InitDone"));
    }

    #[test]
    fn a_namespace_that_lists_again_replaces_only_its_own_objects() {
        let events = vec![
            (0, Event::Init),
            (0, Event::InitApply(cm("a", "kept", "1"))),
            (0, Event::InitApply(cm("a", "gone", "2"))),
            (0, Event::InitDone),
            (1, Event::Init),
            (1, Event::InitApply(cm("b", "other", "3"))),
            (1, Event::InitDone),
            // a's watch was lost: it lists again, without `gone`, with a newer `kept` and a new
            // object, while b goes on.
            (0, Event::Init),
            (0, Event::InitApply(cm("a", "kept", "4"))),
            (1, Event::Apply(cm("b", "other", "5"))),
            (0, Event::InitApply(cm("a", "new", "6"))),
            (0, Event::InitDone),
        ];
        let (content, ready, passed) = replay(2, events);
        assert_eq!(content, ["a/kept@4", "a/new@6", "b/other@5"]);
        assert!(ready);
        let after_start: Vec<&str> = passed
            .iter()
            .skip_while(|e| *e != "InitDone")
            .skip(1)
            .map(String::as_str)
            .collect();
        assert_eq!(after_start, ["Apply kept", "Apply other", "Apply new", "Delete gone"]);
    }

    #[test]
    fn errors_pass_through_and_change_nothing() {
        let mut merge = Merge::<ConfigMap>::new(1);
        let out = merge.next(0, Err(watcher::Error::NoResourceVersion));
        assert!(matches!(out.as_slice(), [Err(watcher::Error::NoResourceVersion)]));
        assert!(!merge.initialized);
    }

    #[test]
    fn the_list_of_namespaces() {
        assert_eq!(WatchScope::from_list(Vec::<&str>::new()), Ok(WatchScope::Cluster));
        assert_eq!(WatchScope::from_list(["", " "]), Ok(WatchScope::Cluster));
        assert_eq!(
            WatchScope::from_list(["team-b", "team-a", "team-b"]),
            Ok(WatchScope::Namespaces(
                ["team-a".to_owned(), "team-b".to_owned()].into()
            ))
        );
        for bad in ["Team-A", "team_a", "-a", "a-", &"a".repeat(64), "a.b"] {
            assert_eq!(
                WatchScope::from_list([bad]),
                Err(InvalidNamespace(bad.to_owned())),
                "{bad}"
            );
        }
        let scope = WatchScope::from_list(["team-a"]).unwrap();
        assert!(scope.contains("team-a") && !scope.contains("team-b"));
        assert!(WatchScope::Cluster.contains("anything"));
    }
}
