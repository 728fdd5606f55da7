//! A document as it was at some heads, readable like the document itself.
//!
//! [`AtHeads`] implements Automerge's [`ReadDoc`] by answering every read with its `*_at` form at the
//! heads it was made with, so everything in [`crate::doc`] (the record view, the shape check, a
//! record state's refresh) reads a past state of a document without a copy of it. The relay uses it
//! to judge a run of changes applied in one batch: the state after each change is the document at
//! that change's heads.
//!
//! A read at the document's current heads takes Automerge's unscoped fast path; any other heads cost
//! a walk of the change graph per read (Automerge computes the clock for the heads each time).

use std::ops::RangeBounds;

use automerge::iter::{DocIter, Keys, ListRange, MapRange, Spans, Values};
use automerge::marks::{Mark, MarkSet};
use automerge::{
    hydrate, Automerge, AutomergeError, Change, ChangeHash, Cursor, CursorPosition, MoveCursor,
    ObjId, ObjType, Parents, Prop, ReadDoc, Stats, TextEncoding, Value,
};

/// `doc` as it was at `heads` (which must all be changes of `doc`).
#[derive(Clone, Copy)]
pub struct AtHeads<'a> {
    doc: &'a Automerge,
    heads: &'a [ChangeHash],
}

impl<'a> AtHeads<'a> {
    pub fn new(doc: &'a Automerge, heads: &'a [ChangeHash]) -> Self {
        AtHeads { doc, heads }
    }

    /// The heads given explicitly to an `*_at` read win over the view's own.
    fn or_mine<'h>(&'h self, heads: Option<&'h [ChangeHash]>) -> &'h [ChangeHash] {
        heads.unwrap_or(self.heads)
    }
}

impl ReadDoc for AtHeads<'_> {
    fn parents<O: AsRef<ObjId>>(&self, obj: O) -> Result<Parents<'_>, AutomergeError> {
        self.doc.parents_at(obj, self.heads)
    }

    fn parents_at<O: AsRef<ObjId>>(
        &self,
        obj: O,
        heads: &[ChangeHash],
    ) -> Result<Parents<'_>, AutomergeError> {
        self.doc.parents_at(obj, heads)
    }

    fn keys<O: AsRef<ObjId>>(&self, obj: O) -> Keys<'_> {
        self.doc.keys_at(obj, self.heads)
    }

    fn keys_at<O: AsRef<ObjId>>(&self, obj: O, heads: &[ChangeHash]) -> Keys<'_> {
        self.doc.keys_at(obj, heads)
    }

    fn iter_at<O: AsRef<ObjId>>(&self, obj: O, heads: Option<&[ChangeHash]>) -> DocIter<'_> {
        self.doc.iter_at(obj, Some(self.or_mine(heads)))
    }

    fn map_range<'b, O: AsRef<ObjId>, R: RangeBounds<String> + 'b>(
        &'b self,
        obj: O,
        range: R,
    ) -> MapRange<'b> {
        self.doc.map_range_at(obj, range, self.heads)
    }

    fn map_range_at<'b, O: AsRef<ObjId>, R: RangeBounds<String> + 'b>(
        &'b self,
        obj: O,
        range: R,
        heads: &[ChangeHash],
    ) -> MapRange<'b> {
        self.doc.map_range_at(obj, range, heads)
    }

    fn list_range<O: AsRef<ObjId>, R: RangeBounds<usize>>(
        &self,
        obj: O,
        range: R,
    ) -> ListRange<'_> {
        self.doc.list_range_at(obj, range, self.heads)
    }

    fn list_range_at<O: AsRef<ObjId>, R: RangeBounds<usize>>(
        &self,
        obj: O,
        range: R,
        heads: &[ChangeHash],
    ) -> ListRange<'_> {
        self.doc.list_range_at(obj, range, heads)
    }

    fn values<O: AsRef<ObjId>>(&self, obj: O) -> Values<'_> {
        self.doc.values_at(obj, self.heads)
    }

    fn values_at<O: AsRef<ObjId>>(&self, obj: O, heads: &[ChangeHash]) -> Values<'_> {
        self.doc.values_at(obj, heads)
    }

    fn length<O: AsRef<ObjId>>(&self, obj: O) -> usize {
        self.doc.length_at(obj, self.heads)
    }

    fn length_at<O: AsRef<ObjId>>(&self, obj: O, heads: &[ChangeHash]) -> usize {
        self.doc.length_at(obj, heads)
    }

    fn object_type<O: AsRef<ObjId>>(&self, obj: O) -> Result<ObjType, AutomergeError> {
        self.doc.object_type(obj)
    }

    fn marks<O: AsRef<ObjId>>(&self, obj: O) -> Result<Vec<Mark>, AutomergeError> {
        self.doc.marks_at(obj, self.heads)
    }

    fn marks_at<O: AsRef<ObjId>>(
        &self,
        obj: O,
        heads: &[ChangeHash],
    ) -> Result<Vec<Mark>, AutomergeError> {
        self.doc.marks_at(obj, heads)
    }

    fn get_marks<O: AsRef<ObjId>>(
        &self,
        obj: O,
        index: usize,
        heads: Option<&[ChangeHash]>,
    ) -> Result<MarkSet, AutomergeError> {
        self.doc.get_marks(obj, index, Some(self.or_mine(heads)))
    }

    fn text<O: AsRef<ObjId>>(&self, obj: O) -> Result<String, AutomergeError> {
        self.doc.text_at(obj, self.heads)
    }

    fn text_at<O: AsRef<ObjId>>(
        &self,
        obj: O,
        heads: &[ChangeHash],
    ) -> Result<String, AutomergeError> {
        self.doc.text_at(obj, heads)
    }

    fn spans<O: AsRef<ObjId>>(&self, obj: O) -> Result<Spans<'_>, AutomergeError> {
        self.doc.spans_at(obj, self.heads)
    }

    fn spans_at<O: AsRef<ObjId>>(
        &self,
        obj: O,
        heads: &[ChangeHash],
    ) -> Result<Spans<'_>, AutomergeError> {
        self.doc.spans_at(obj, heads)
    }

    fn get_cursor<O: AsRef<ObjId>, I: Into<CursorPosition>>(
        &self,
        obj: O,
        position: I,
        at: Option<&[ChangeHash]>,
    ) -> Result<Cursor, AutomergeError> {
        self.doc.get_cursor(obj, position, Some(self.or_mine(at)))
    }

    fn get_cursor_moving<O: AsRef<ObjId>, I: Into<CursorPosition>>(
        &self,
        obj: O,
        position: I,
        at: Option<&[ChangeHash]>,
        move_cursor: MoveCursor,
    ) -> Result<Cursor, AutomergeError> {
        self.doc
            .get_cursor_moving(obj, position, Some(self.or_mine(at)), move_cursor)
    }

    fn get_cursor_position<O: AsRef<ObjId>>(
        &self,
        obj: O,
        cursor: &Cursor,
        at: Option<&[ChangeHash]>,
    ) -> Result<usize, AutomergeError> {
        self.doc
            .get_cursor_position(obj, cursor, Some(self.or_mine(at)))
    }

    fn hydrate<O: AsRef<ObjId>>(
        &self,
        obj: O,
        heads: Option<&[ChangeHash]>,
    ) -> Result<hydrate::Value, AutomergeError> {
        ReadDoc::hydrate(self.doc, obj, Some(self.or_mine(heads)))
    }

    fn get<O: AsRef<ObjId>, P: Into<Prop>>(
        &self,
        obj: O,
        prop: P,
    ) -> Result<Option<(Value<'_>, ObjId)>, AutomergeError> {
        self.doc.get_at(obj, prop, self.heads)
    }

    fn get_at<O: AsRef<ObjId>, P: Into<Prop>>(
        &self,
        obj: O,
        prop: P,
        heads: &[ChangeHash],
    ) -> Result<Option<(Value<'_>, ObjId)>, AutomergeError> {
        self.doc.get_at(obj, prop, heads)
    }

    fn get_all<O: AsRef<ObjId>, P: Into<Prop>>(
        &self,
        obj: O,
        prop: P,
    ) -> Result<Vec<(Value<'_>, ObjId)>, AutomergeError> {
        self.doc.get_all_at(obj, prop, self.heads)
    }

    fn get_all_at<O: AsRef<ObjId>, P: Into<Prop>>(
        &self,
        obj: O,
        prop: P,
        heads: &[ChangeHash],
    ) -> Result<Vec<(Value<'_>, ObjId)>, AutomergeError> {
        self.doc.get_all_at(obj, prop, heads)
    }

    fn get_missing_deps(&self, heads: &[ChangeHash]) -> Vec<ChangeHash> {
        self.doc.get_missing_deps(heads)
    }

    fn get_change_by_hash(&self, hash: &ChangeHash) -> Option<Change> {
        self.doc.get_change_by_hash(hash)
    }

    fn stats(&self) -> Stats {
        self.doc.stats()
    }

    fn text_encoding(&self) -> TextEncoding {
        self.doc.text_encoding()
    }
}
