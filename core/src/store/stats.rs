//! Statistics of an area and period on the device: the protocol's one function
//! (`gridwork_protocol::stats::compute`, as `Counting`) over this store's record views, the same the relay runs
//! over its own (`GET /v1/stats`), so both give the same numbers for the same data.
use super::Store;
use crate::error::{Error, Result};
use gridwork_protocol::stats::{AreaPlace, Counting, Stats, StatsQuery};
use std::collections::HashMap;

impl Store {
    /// Statistics of `query` over the records on this device (this user's scope).
    pub fn statistics(&self, query: &StatsQuery) -> Result<Stats> {
        let schedules = self.schedules()?;
        let areas = {
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
            areas
        };
        // One record at a time: a store of 100,000 records is counted without holding them.
        let mut counting = Counting::new(areas, schedules, query);
        self.each_view("deleted = 0", |r| counting.add(&r))?;
        Ok(counting.finish())
    }
}
