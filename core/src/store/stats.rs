//! Statistics of an area and period on the device: the protocol's one function
//! (`gridwork_protocol::stats::compute`) over this store's record views, the same the relay runs
//! over its own (`GET /v1/stats`), so both give the same numbers for the same data.
use super::Store;
use crate::error::{Error, Result};
use crate::model::Record;
use gridwork_protocol::stats::{compute, AreaPlace, Stats, StatsQuery};
use std::collections::HashMap;

impl Store {
    /// Statistics of `query` over the records on this device (this user's scope).
    pub fn statistics(&self, query: &StatsQuery) -> Result<Stats> {
        let schedules = self.schedules()?;
        let (areas, rows) = {
            let inner = self.lock();
            let areas: HashMap<String, AreaPlace> = inner
                .stored_areas()?
                .into_iter()
                .map(|a| {
                    (
                        a.id,
                        AreaPlace {
                            path: a.path,
                            level: a.level.as_str().to_owned(),
                        },
                    )
                })
                .collect();
            if let Some(a) = &query.area {
                if !areas.contains_key(a) {
                    return Err(Error::UnknownArea(a.clone()));
                }
            }
            let mut st = inner
                .conn
                .prepare_cached("SELECT id, view FROM records WHERE deleted = 0")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })?;
            let rows: Vec<(String, Option<String>)> = rows.collect::<rusqlite::Result<_>>()?;
            (areas, rows)
        };
        let mut records: Vec<Record> = Vec::with_capacity(rows.len());
        for (id, view) in rows {
            match view.and_then(|v| serde_json::from_str::<Record>(&v).ok()) {
                Some(r) => records.push(r),
                // A row written before views were kept: read from its document.
                None => records.push(self.get(&id)?),
            }
        }
        Ok(compute(&records, &areas, &schedules, query))
    }
}
