//! A merged view's family written in the text format as its members arrive, in the order a
//! render writes whole members in, so that no family is held whole (a cluster node's merged
//! scrape, `cluster::read`).

use std::sync::Arc;

use super::{dedup, own_part, MergedRender};
use crate::exposition;
use crate::store::family::{MetricChunk, StoredFamily};

impl MergedRender<'_> {
    /// Writes the family `name` in the text format from members handed over one at a time, in
    /// the order a render writes whole members in: by first series' sort key, then group key
    /// (`next` yields them, `None` at the end). Exactly what [`Self::family`] writes for the
    /// same members, without holding them: members whose series ranges overlap are held until
    /// the next member starts past them, and their series are then written sorted (which is
    /// what a render of the whole family does, since ranges apart keep their order). The
    /// caller knows the HELP and TYPE lines before the members: `lead_type`, the type of the
    /// first member in key order that has series, and `lead_help`, the first non-empty HELP in
    /// key order, over every member. `next` failing (a peer lost midway) fails the render.
    pub fn family_sorted(
        &mut self,
        name: Arc<str>,
        lead_type: Option<exposition::MetricType>,
        lead_help: Option<Arc<str>>,
        next: &mut dyn FnMut() -> Result<Option<StoredFamily>, String>,
    ) -> Result<(), String> {
        while let Some(o) = self.own.next_if(|o| o.name < name) {
            self.writer.part(own_part(o, &self.empty_key), &mut self.stats);
        }
        self.stats.families += 1;
        let mut help = self.reserved.get(&name).map(|(_, h)| Arc::<str>::from(h));
        let mut typ = lead_type;
        let mut own = None;
        if let Some(o) = self.own.next_if(|o| o.name == name) {
            help = Some(o.help.clone());
            // The gateway's own member has the empty key: first in key order.
            if !o.is_empty() {
                typ = Some(o.typ);
                own = Some(o);
            }
        }
        let help = help.or(lead_help);
        let Some(typ) = typ else {
            // Nothing to expose: the members (all without series) are read and dropped.
            while next()?.is_some() {}
            return Ok(());
        };
        let mut header = Vec::new();
        exposition::write_help_and_type(
            &mut header,
            &name,
            help.as_deref().filter(|h| !h.is_empty()),
            typ,
        );
        self.writer.write(&header);
        // Members whose ranges overlap, in order, and the highest last key among them.
        let mut overlapping: Vec<StoredFamily> = Vec::new();
        let mut reach: Vec<u8> = Vec::new();
        loop {
            let m = match next()? {
                Some(m) => m,
                None => match own.take() {
                    Some(o) => o.clone(),
                    None => break,
                },
            };
            if m.is_empty() {
                continue;
            }
            if m.typ != typ {
                self.stats.inconsistent_dropped += 1;
                continue;
            }
            // The gateway's own member goes where its first series puts it (first of equals).
            let m = match own {
                Some(o) if o.key_range().0 <= m.key_range().0 => {
                    own = None;
                    self.place(o.clone(), &mut overlapping, &mut reach);
                    m
                }
                _ => m,
            };
            self.place(m, &mut overlapping, &mut reach);
        }
        self.write_overlapping(&mut overlapping);
        Ok(())
    }

    /// Adds `m` after the members held: those are written first when `m` starts past them.
    fn place(&mut self, m: StoredFamily, overlapping: &mut Vec<StoredFamily>, reach: &mut Vec<u8>) {
        let (first, last) = m.key_range();
        if !overlapping.is_empty() && first > reach.as_slice() {
            self.write_overlapping(overlapping);
        }
        if overlapping.is_empty() || last > reach.as_slice() {
            reach.clear();
            reach.extend_from_slice(last);
        }
        overlapping.push(m);
    }

    /// Writes members held together: one whole; several with their series sorted and each
    /// series once (as `write_family` does for a family whose members overlap).
    fn write_overlapping(&mut self, overlapping: &mut Vec<StoredFamily>) {
        match overlapping.len() {
            0 => {}
            1 => self.writer.write(overlapping[0].text()),
            _ => {
                let mut chunks: Vec<MetricChunk> =
                    overlapping.iter().flat_map(|m| m.chunks()).collect();
                chunks.sort_by(|a, b| a.sort_key.cmp(b.sort_key));
                for c in dedup(&chunks, &mut self.stats) {
                    self.writer.write(c.text);
                }
            }
        }
        overlapping.clear();
    }

}
