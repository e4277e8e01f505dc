//! `geoip`: country, city and AS fields of an address, from a MaxMind DB file.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use maxminddb::{LookupResult, PathElement, Reader};

use crate::engine::cog::JobId;
use crate::kit::on_error::{self, OnError, OnErrorSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{self, Key, Map, Merge, Path, Record, SharedStr, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::lookup::LookupCounters;
use super::reload::{FileWatch, Stamp, read_file};

/// Writes the country, city, location and autonomous system of the address in `field`,
/// as a MaxMind DB file (`.mmdb`: GeoIP2 or GeoLite2 City, Country or ASN, or any
/// database laid out like them) knows them, into the map `target` (`geo` by default;
/// `target = ""` writes at the top level), each name after `prefix`. `fields` picks which:
///
/// | field | from the database |
/// |---|---|
/// | `country_code` | `country.iso_code` |
/// | `country` | `country.names.LANGUAGE` |
/// | `continent_code` | `continent.code` |
/// | `city` | `city.names.LANGUAGE` |
/// | `subdivision` | `subdivisions[0].names.LANGUAGE` |
/// | `postal_code` | `postal.code` |
/// | `latitude`, `longitude` | `location.latitude`, `location.longitude` |
/// | `time_zone` | `location.time_zone` |
/// | `asn` | `autonomous_system_number` |
/// | `as_org` | `autonomous_system_organization` |
///
/// By default every one the database has for the address. An address the database does
/// not know, and a record without the field (or null), pass unchanged (counted as
/// misses); a value that is not an address (text or ip) follows `on_error`, as does a
/// database entry that cannot be read.
///
/// The database is read into memory at start (a file that is not a MaxMind DB is a start
/// error) and read again, on a worker thread, when it changes: rewritten in place or
/// replaced by a new file renamed over it (inotify on its directory, and its identity
/// checked every `poll_interval`). The records after the swap see the new database; a
/// file that does not open keeps the old one and is logged. Hits, misses, reloads and
/// failed reloads are logged at shutdown.
///
/// ```toml
/// [[train.cog]]
/// type = "geoip"
/// path = "/var/lib/GeoIP/GeoLite2-City.mmdb"
/// field = "client"
/// target = "geo"
/// fields = ["country_code", "city", "latitude", "longitude"]
/// ```
///
/// From Rust, over any datum, with a getter of the address, a [`Merge`] storing the
/// fields and an [`OnError`]:
/// `Geoip::from_settings(&GeoipSettings { path: "city.mmdb".into(), ..Default::default() }, get, merge, on_error)`.
pub struct Geoip<D> {
    get: Getter<D, Value>,
    merge: Merge<D>,
    on_error: OnError<D>,
    path: PathBuf,
    field_name: String,
    language: String,
    fields: Vec<(GeoField, Key)>,
    db: Option<Reader<Vec<u8>>>,
    watch: FileWatch,
    load_job: Option<JobId>,
    counters: Rc<LookupCounters>,
    scratch: Map,
}

/// The descriptor of `geoip`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "geoip",
    kind: CogKind::Transform,
    summary: "writes the country, city, location and AS of an address from a MaxMind DB \
              file, reloaded when the file changes",
    params: GeoipSettings::PARAMS,
    fields: &[(
        "geo.FIELD",
        "(`target`, `prefix`, `fields`) country_code, country, continent_code, city, \
         subdivision, postal_code, latitude, longitude, time_zone, asn, as_org",
    )],
    build,
};

crate::settings! {
    /// Settings of `geoip`.
    pub struct GeoipSettings {
        /// the MaxMind DB file (.mmdb); reloaded when it changes
        #[setting(required)]
        path: PathBuf,
        /// dotted path of the address (text or ip)
        field: String = "client",
        /// dotted path of a map to put the fields in (created if missing); "": the top level
        target: String = "geo",
        /// text put before every name written
        prefix: String,
        /// which of country_code, country, continent_code, city, subdivision, postal_code, latitude, longitude, time_zone, asn, as_org; empty: all the database has
        fields: Vec<String>,
        /// language of the names (country, city, subdivision), as the database names it
        language: String = "en",
        /// how often the file is checked without inotify (and as a safety net with it)
        poll_interval: Duration = "1s",
        /// What to do with a value that is not an address.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

/// One field `geoip` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoField {
    /// `country.iso_code`
    CountryCode,
    /// `country.names.LANGUAGE`
    Country,
    /// `continent.code`
    ContinentCode,
    /// `city.names.LANGUAGE`
    City,
    /// `subdivisions[0].names.LANGUAGE`
    Subdivision,
    /// `postal.code`
    PostalCode,
    /// `location.latitude`
    Latitude,
    /// `location.longitude`
    Longitude,
    /// `location.time_zone`
    TimeZone,
    /// `autonomous_system_number`
    Asn,
    /// `autonomous_system_organization`
    AsOrg,
}

impl GeoField {
    /// Every field, in the order written.
    pub const ALL: [GeoField; 11] = [
        GeoField::CountryCode,
        GeoField::Country,
        GeoField::ContinentCode,
        GeoField::City,
        GeoField::Subdivision,
        GeoField::PostalCode,
        GeoField::Latitude,
        GeoField::Longitude,
        GeoField::TimeZone,
        GeoField::Asn,
        GeoField::AsOrg,
    ];

    /// The name in settings and output.
    pub fn name(self) -> &'static str {
        match self {
            GeoField::CountryCode => "country_code",
            GeoField::Country => "country",
            GeoField::ContinentCode => "continent_code",
            GeoField::City => "city",
            GeoField::Subdivision => "subdivision",
            GeoField::PostalCode => "postal_code",
            GeoField::Latitude => "latitude",
            GeoField::Longitude => "longitude",
            GeoField::TimeZone => "time_zone",
            GeoField::Asn => "asn",
            GeoField::AsOrg => "as_org",
        }
    }

    /// The value of this field in a database entry; `Ok(None)` when the entry lacks it.
    fn read(
        self,
        r: &LookupResult<'_, Vec<u8>>,
        lang: &str,
    ) -> Result<Option<Value>, maxminddb::MaxMindDbError> {
        use PathElement::{Index, Key as K};
        let text = |path: &[PathElement<'_>]| {
            r.decode_path::<&str>(path)
                .map(|s| s.map(|s| Value::Shared(SharedStr::short(s))))
        };
        let float =
            |path: &[PathElement<'_>]| r.decode_path::<f64>(path).map(|f| f.map(Value::Float));
        match self {
            GeoField::CountryCode => text(&[K("country"), K("iso_code")]),
            GeoField::Country => text(&[K("country"), K("names"), K(lang)]),
            GeoField::ContinentCode => text(&[K("continent"), K("code")]),
            GeoField::City => text(&[K("city"), K("names"), K(lang)]),
            GeoField::Subdivision => text(&[K("subdivisions"), Index(0), K("names"), K(lang)]),
            GeoField::PostalCode => text(&[K("postal"), K("code")]),
            GeoField::Latitude => float(&[K("location"), K("latitude")]),
            GeoField::Longitude => float(&[K("location"), K("longitude")]),
            GeoField::TimeZone => text(&[K("location"), K("time_zone")]),
            GeoField::Asn => {
                // Writers store the number as whichever unsigned type fits it.
                let path = [K("autonomous_system_number")];
                r.decode_path::<u32>(&path)
                    .map(|n| n.map(i64::from))
                    .or_else(|_| r.decode_path::<u16>(&path).map(|n| n.map(i64::from)))
                    .or_else(|_| {
                        r.decode_path::<u64>(&path)
                            .map(|n| n.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
                    })
                    .map(|n| n.map(Value::Int))
            }
            GeoField::AsOrg => text(&[K("autonomous_system_organization")]),
        }
    }
}

/// A database as loaded, with the version of the file it came from.
type Loaded = Result<(Reader<Vec<u8>>, Stamp), (String, Option<Stamp>)>;

fn load(path: &std::path::Path) -> Loaded {
    let (bytes, stamp) = read_file(path).map_err(|e| (format!("cannot read: {e}"), None))?;
    let reader =
        Reader::from_source(bytes).map_err(|e| (format!("not a MaxMind DB: {e}"), Some(stamp)))?;
    Ok((reader, stamp))
}

/// What failed on one address.
enum Failure {
    NotAnAddress(&'static str),
    Db(maxminddb::MaxMindDbError),
}

impl<D: 'static> Geoip<D> {
    /// A `geoip` made from its settings: `get` reads the address, `merge` stores the fields
    /// (`target` is the caller's to apply, as [`record::merge_into`] does), failures go to
    /// `on_error`. The database is read at [`Cog::start`].
    pub fn from_settings(
        s: &GeoipSettings,
        get: Getter<D, Value>,
        merge: Merge<D>,
        on_error: OnError<D>,
    ) -> Result<Self, SettingError> {
        if s.path.as_os_str().is_empty() {
            return Err(SettingError::new("path", "give the database file"));
        }
        if s.language.is_empty() {
            return Err(SettingError::new(
                "language",
                "give a language, e.g. \"en\"",
            ));
        }
        if s.poll_interval.is_zero() {
            return Err(SettingError::new("poll_interval", "must be above 0"));
        }
        let mut fields = Vec::new();
        for name in &s.fields {
            let Some(f) = GeoField::ALL.iter().find(|f| f.name() == name) else {
                let all: Vec<&str> = GeoField::ALL.iter().map(|f| f.name()).collect();
                return Err(SettingError::new(
                    "fields",
                    format!("no field {name:?} (fields: {})", all.join(", ")),
                ));
            };
            if !fields.iter().any(|(g, _)| g == f) {
                fields.push((*f, Key::new(&format!("{}{}", s.prefix, f.name()))));
            }
        }
        if fields.is_empty() {
            fields = GeoField::ALL
                .iter()
                .map(|f| (*f, Key::new(&format!("{}{}", s.prefix, f.name()))))
                .collect();
        }
        Ok(Geoip {
            get,
            merge,
            on_error,
            path: s.path.clone(),
            field_name: s.field.clone(),
            language: s.language.clone(),
            fields,
            db: None,
            watch: FileWatch::new(&s.path, s.poll_interval),
            load_job: None,
            counters: Rc::default(),
            scratch: Map::new(),
        })
    }

    /// The counters, shared: they go on counting after the cog is put in a train.
    pub fn counters(&self) -> Rc<LookupCounters> {
        Rc::clone(&self.counters)
    }

    /// Writes the fields of `ip`; `Ok(false)` when the database does not know it.
    fn enrich(&mut self, d: &mut D, ip: IpAddr) -> Result<bool, Failure> {
        let Some(db) = &self.db else {
            return Ok(false);
        };
        let found = db.lookup(ip).map_err(Failure::Db)?;
        if !found.has_data() {
            return Ok(false);
        }
        self.scratch.clear();
        for &(f, key) in &self.fields {
            if let Some(v) = f.read(&found, &self.language).map_err(Failure::Db)? {
                self.scratch.append_new(key, v);
            }
        }
        if self.scratch.is_empty() {
            return Ok(false);
        }
        self.merge.merge(d, &mut self.scratch);
        Ok(true)
    }

    fn reload(&mut self, cx: &mut Ctx) {
        let path = self.path.clone();
        match cx.submit(move || load(&path)) {
            Ok(job) => {
                self.load_job = Some(job);
                self.watch.loading();
            }
            Err(e) => {
                slog::warn!(cx.logger(), "geoip database not reloaded: no worker";
                    "file" => %self.path.display(), "reason" => %e);
            }
        }
    }
}

impl<D: 'static> Cog<D> for Geoip<D> {
    fn name(&self) -> &str {
        "geoip"
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let (db, stamp) = load(&self.path)
            .map_err(|(e, _)| format!("geoip database not loaded: {}: {e}", self.path.display()))?;
        slog::info!(cx.logger(), "geoip database loaded";
            "file" => %self.path.display(), "type" => &db.metadata().database_type);
        self.db = Some(db);
        self.watch.start(stamp, cx)
    }

    fn process(&mut self, mut d: D, out: &mut Out<D>, cx: &mut Ctx) {
        let ip = match self.get.get(&d) {
            None | Some(Value::Null) => {
                self.counters.add_misses(1);
                out.push(d);
                return;
            }
            Some(v) => v.as_ip().ok_or(v.type_name()),
        };
        let result = match ip {
            Ok(ip) => self.enrich(&mut d, ip),
            Err(ty) => Err(Failure::NotAnAddress(ty)),
        };
        match result {
            Ok(true) => {
                self.counters.add_hits(1);
                out.push(d);
            }
            Ok(false) => {
                self.counters.add_misses(1);
                out.push(d);
            }
            Err(f) => {
                let why = match f {
                    Failure::NotAnAddress(ty) => format!(
                        "field {:?}: not an IP address (a {ty} value)",
                        self.field_name
                    ),
                    Failure::Db(e) => format!("{}: {e}", self.path.display()),
                };
                self.on_error.fail(d, "geoip", &why, out, cx);
            }
        }
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, _out: &mut Out<D>, cx: &mut Ctx) {
        if self.watch.changed(local, &why, cx) {
            self.reload(cx);
        }
    }

    fn job_done(&mut self, job: JobId, result: JobResult, _out: &mut Out<D>, cx: &mut Ctx) {
        if self.load_job != Some(job) {
            return;
        }
        self.load_job = None;
        let loaded = match result {
            Ok(out) => match out.downcast::<Loaded>() {
                Ok(l) => *l,
                Err(_) => Err(("unexpected job result".to_string(), None)),
            },
            Err(panic) => Err((panic.to_string(), None)),
        };
        let stamp = match loaded {
            Ok((db, stamp)) => {
                slog::info!(cx.logger(), "geoip database reloaded";
                    "file" => %self.path.display(), "type" => &db.metadata().database_type);
                self.db = Some(db);
                self.counters.reloaded(true);
                Some(stamp)
            }
            Err((e, stamp)) => {
                self.counters.reloaded(false);
                slog::error!(cx.logger(), "geoip database not reloaded, the old one stays";
                    "reason" => format!("{}: {e}", self.path.display()));
                stamp.or_else(|| Stamp::read(self.watch.path()).ok())
            }
        };
        if self.watch.loaded(stamp) {
            self.reload(cx);
        }
    }

    fn done(&mut self, cx: &mut Ctx) {
        let c = &self.counters;
        slog::info!(cx.logger(), "geoip counters";
            "file" => %self.path.display(), "hits" => c.hits(), "misses" => c.misses(),
            "reloads" => c.reloads(), "reload_failures" => c.reload_failures());
    }
}

impl<D> fmt::Debug for Geoip<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Geoip")
            .field("path", &self.path)
            .field("field", &self.field_name)
            .field("fields", &self.fields)
            .field("counters", &self.counters)
            .finish()
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: GeoipSettings = p.settings()?;
    s.path = p.resolve(&s.path.to_string_lossy());
    let field = Path::parse(&s.field).map_err(|e| p.error("field", e.to_string()))?;
    let target = if s.target.is_empty() {
        None
    } else {
        Some(Path::parse(&s.target).map_err(|e| p.error("target", e.to_string()))?)
    };
    let on_error = on_error::from_settings(&s.on_error, p, cx)?;
    let get = Getter::new(move |r: &Record| r.get_path(&field));
    let geoip = Geoip::from_settings(&s, get, record::merge_into(target), on_error)
        .map_err(|e| super::setting_error(p, e))?;
    Ok(Box::new(geoip))
}
