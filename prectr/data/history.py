"""Leak-free histories: what a user, and the crowd under a query, did strictly before a request.

One primitive, :class:`EventIndex`, sorts events once by (key, time) and then finds, for any
batch of requests, the last ``length`` events that share a request's key (a user, a query, a
query category) and happened strictly before it; an event at the same instant as the request
is not history. :class:`HistoryIndex` gives the histories of a log:

* ``user_requests``: the user's last requests (their query, and through them what was clicked);
* ``user_clicks``: the user's last clicked impressions (the sequence DIN-style attention reads);
* ``query_crowd``: the last exposed impressions of *all* users under the same query (its
  normalised text: lower case, single spaces), within a time window;
* ``category_crowd``: the same under the same query category;
* ``crowd``: what PRECTR-V2's cross-user preference mining reads, the query's crowd, backed off
  to the category's when the query has fewer than ``crowd_min_events`` events in the window,
  then to nothing (``crowd_level`` says which: 2 query, 1 category, 0 none).

Offline, every request of a log asks the index built from that log (:meth:`HistoryIndex.of_log`);
online, the serving store builds the index once and asks it for each new request, so both see
exactly the same events. A log too large for memory is read in chunks in time order: each
chunk's requests ask an index of the chunk's own events joined to a :class:`HistoryState`, the
earlier events a later history can still show (each user's last requests and clicks, each
query's and category's last exposed impressions while a later crowd window can hold them), so a
chunk sees exactly the history the whole log's index would give it, in memory bounded by the
number of users, queries and categories. The index of a chunk holds only the events of its own
requests' users, queries and categories (``HistoryIndex(..., asking=requests)``): the rest of
the state is carried over to the next chunk as it was.
Histories are arrays of row indices into the ``requests`` or ``impressions`` table (of the
events indexed), oldest first, newest last, ``-1`` where there is nothing. They read observed
columns only (``click``, ``relevance``), never the evaluation-only ``true_relevance``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.vocabulary import Vocabulary
from prectr.words import count

COLD_START_MAX_EARLIER = 2  # a request is cold-start when its user made at most 2 before it


def earlier_requests(user: np.ndarray) -> np.ndarray:
    """For requests in time order, how many requests the same user made before each one."""
    order = np.argsort(user, kind="stable")
    sorted_user = user[order]
    first = np.r_[True, sorted_user[1:] != sorted_user[:-1]]
    starts = np.flatnonzero(first)
    counts = np.diff(np.r_[starts, user.size])
    out = np.empty(user.size, dtype=np.int64)
    out[order] = np.arange(user.size) - np.repeat(starts, counts)
    return out


class EventIndex:
    """Events sorted once by (key, time); keys below 0 are never history, and are left out of
    the index (most impressions are in none of a history's: unclicked, unexposed)."""

    def __init__(self, event_key: np.ndarray, event_time: np.ndarray):
        # (a history state's index is rebuilt each chunk: its peak is memory, so temporaries
        # are let go as soon as they are used, and arithmetic is done in place)
        self.size = event_key.size
        kept = np.flatnonzero(event_key >= 0).astype(np.int32 if self.size < 2**31 else np.int64)
        time = event_time[kept]
        self.times = np.unique(time)
        self.width = self.times.size + 1
        rank = np.searchsorted(self.times, time)
        del time
        composite = event_key[kept].astype(np.int64)
        composite += 1
        composite *= self.width
        composite += rank
        del rank
        order = np.argsort(composite, kind="stable")  # ties keep the events' order
        self.sorted = composite[order]
        del composite
        self.order = kept[order]

    def last_before(
        self,
        query_key: np.ndarray,
        query_time: np.ndarray,
        length: int,
        since: np.ndarray | None = None,
    ) -> np.ndarray:
        """For each query, the indices of the last ``length`` events with its key and an
        earlier time (strictly), oldest first, -1 padded on the left; a key below 0 matches
        nothing. With ``since``, only events at or after each query's ``since`` count (a time
        window). Binary searches per query: the key's block (or its events from ``since``),
        and its events before the query's instant (those whose time ranks below the number of
        event instants before it).
        """
        if length < 1:
            raise ValueError("length must be >= 1")
        q_key = np.asarray(query_key, dtype=np.int64)
        base = (q_key + 1) * self.width
        first = base if since is None else base + np.searchsorted(self.times, since, "left")
        block_start = np.searchsorted(self.sorted, first, side="left")
        end = np.searchsorted(self.sorted, base + np.searchsorted(self.times, query_time), "left")
        positions = end[:, None] - length + np.arange(length)
        valid = (positions >= block_start[:, None]) & (q_key[:, None] >= 0)
        out = np.full(positions.shape, -1, dtype=np.int64)
        out[valid] = self.order[positions[valid]]
        return out

    def recent(self, length: int, otherwise: np.ndarray) -> np.ndarray:
        """Whether each event is among the last ``length`` events of its key (the newest by
        time, ties in the events' order); for an event left out of the index (its key below
        0), what ``otherwise`` says of it."""
        end = self.sorted // self.width + 1  # the next key + 1
        end *= self.width
        end = np.searchsorted(self.sorted, end, "left")
        end -= np.arange(end.size)
        out = otherwise.copy()
        out[self.order] = end <= length
        return out


def last_before(
    event_key: np.ndarray,
    event_time: np.ndarray,
    query_key: np.ndarray,
    query_time: np.ndarray,
    length: int,
) -> np.ndarray:
    """:meth:`EventIndex.last_before` of a one-off index."""
    return EventIndex(event_key, event_time).last_before(query_key, query_time, length)


DAY_MS = 86_400_000
CROWD_QUERY, CROWD_CATEGORY, CROWD_NONE = 2, 1, 0  # crowd_level: where the crowd came from


@dataclass
class Histories:
    user_requests: np.ndarray  # (n_requests, user_length) rows of requests
    user_clicks: np.ndarray  # (n_requests, click_length) rows of impressions
    query_crowd: np.ndarray  # (n_requests, crowd_length) rows of impressions
    category_crowd: np.ndarray | None  # as query_crowd; None without query_category
    crowd: np.ndarray  # as query_crowd: the query's, else the category's, else none
    crowd_level: np.ndarray  # (n_requests,) int8: CROWD_QUERY, CROWD_CATEGORY or CROWD_NONE


def _times(timestamps: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.cast(timestamps, pa.timestamp("ms")).cast(pa.int64()).to_numpy()


def normalised_query(queries: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """The query as the crowd is keyed by: lower case, runs of white space as one space, no
    leading or trailing space ("Red  Shoes " and "red shoes" are one query)."""
    collapsed = pc.replace_substring_regex(pc.utf8_lower(queries), r"\s+", " ")
    return pc.utf8_trim_whitespace(collapsed)


class _Keys:
    """Dense codes of the distinct values of a column, in the order they first appear (a
    :class:`Vocabulary` of them, whose ids start at 2, held as an arrow array: there is one
    per user and per query); values never seen, and nulls, get -1. Fitted on the column's
    parts in order (:meth:`add`), the same codes as on the whole column."""

    def __init__(self) -> None:
        self.vocabulary = Vocabulary([])

    def add(self, values: pa.ChunkedArray | pa.Array) -> None:
        """Codes for the values of the column's next part not seen in the parts before."""
        new = pc.unique(pc.drop_null(values))
        seen = self.vocabulary.values
        if len(seen):
            new = pa.concat_arrays([seen, new.filter(pc.invert(pc.is_in(new, value_set=seen)))])
        self.vocabulary = Vocabulary(new)

    def __call__(self, values: pa.ChunkedArray | pa.Array) -> np.ndarray:
        return np.maximum(self.vocabulary.lookup(values) - 2, -1)  # int32, as the ids


#: the histories an impression event can show in (bits of ``Events.shows``): its user's clicks,
#: its query's crowd and its query category's crowd
IN_CLICKS, IN_QUERY_CROWD, IN_CATEGORY_CROWD = 1, 2, 4


@dataclass
class Events:
    """What the histories read of a log (or of a chunk of it), in its order: each request's user
    and time, and each impression's keys (its request's user, normalised query and query
    category; -1: none), time (its request's) and the histories it can still show in
    (``shows``, bits ``IN_CLICKS``, ``IN_QUERY_CROWD``, ``IN_CATEGORY_CROWD``: a click is in
    its user's clicks, an exposed impression in its query's and category's crowds, until later
    events push it out of them; 0 for an unexposed one). Keys are int32 codes and times int64
    milliseconds: a history state holds these for every user's last events, so their width is
    memory that grows with the users."""

    request_user: np.ndarray
    request_time: np.ndarray
    user: np.ndarray
    query: np.ndarray
    category: np.ndarray | None
    time: np.ndarray
    shows: np.ndarray

    def then(self, later: Events) -> Events:
        """These events followed by ``later`` ones; these are spent (:meth:`_spent`)."""
        return Events(*(None if a is None else np.concatenate([a, b])
                        for a, b in zip(self._spent(), _fields(later), strict=True)))  # fmt: skip

    def keep(self, requests: np.ndarray, impressions: np.ndarray) -> Events:
        """The request events and impression events the two masks select; these events are
        spent (:meth:`_spent`)."""
        masks = [requests, requests] + [impressions] * (len(dataclasses.fields(self)) - 2)
        return Events(*(None if a is None else a[mask]
                        for a, mask in zip(self._spent(), masks, strict=True)))  # fmt: skip

    def _spent(self) -> Iterator[np.ndarray | None]:
        """Each array of these events in turn, let go here once the next is asked for (every
        field is ``None`` after): joined or selected from, events are never held twice
        whole, one array at a time is (a history state joined to a chunk's events is the
        largest thing ``prepare`` holds)."""
        for f in dataclasses.fields(self):
            values = getattr(self, f.name)
            setattr(self, f.name, None)
            yield values
            del values


def _among(keys: _Keys, values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A mask over ``keys``' codes: which of them ``values`` hold (one spare slot, so that a
    column of nulls alone, no code at all, still gives a mask :func:`_indexed` can read)."""
    codes = keys(values)
    among = np.zeros(len(keys.vocabulary) - 1, dtype=bool)
    among[codes[codes >= 0]] = True
    return among


def _indexed(
    key: np.ndarray, among: np.ndarray | None, member: np.ndarray | None = None
) -> np.ndarray:
    """Each event's key in an index, -1 where it is left out: where it is not a ``member``
    (nonzero) of the history, or its key is not ``among`` those asked for (a mask over the
    codes; ``None``: all are)."""
    kept = key >= 0
    if member is not None:
        kept &= member > 0
    if among is not None:
        kept &= among[np.maximum(key, 0)]
    return np.where(kept, key, -1)


def _fields(events: Events) -> list[np.ndarray | None]:
    return [getattr(events, f.name) for f in dataclasses.fields(events)]


class HistoryKeys:
    """The keys histories group events by, fitted on a log's requests table, or on its parts
    in order (a log read in chunks; the same keys, without the whole table in memory): users,
    normalised queries and, when the log has them, query categories."""

    def __init__(self, requests: pa.Table | Iterable[pa.Table]):
        self.user, self.query = _Keys(), _Keys()
        self.category: _Keys | None = None
        for part in [requests] if isinstance(requests, pa.Table) else requests:
            self.user.add(part["user_id"])
            self.query.add(normalised_query(part["query"]))
            if "query_category" in part.column_names:
                self.category = self.category or _Keys()
                self.category.add(part["query_category"])

    def events(
        self, requests: pa.Table, request_row: np.ndarray, click: pa.ChunkedArray | pa.Array
    ) -> Events:
        """The events of ``requests`` and of impressions of them (``request_row``: each
        impression's row in ``requests``; ``click``: theirs, null when not exposed)."""
        request_time = _times(requests["timestamp"])
        user = self.user(requests["user_id"])
        query = self.query(normalised_query(requests["query"]))[request_row]
        exposed = click.is_valid().to_numpy(zero_copy_only=False)
        user_of = user[request_row]
        shows = ((exposed & (click.fill_null(0).to_numpy() == 1) & (user_of >= 0)) * IN_CLICKS
                 + (exposed & (query >= 0)) * IN_QUERY_CROWD).astype(np.uint8)  # fmt: skip
        category = None
        if self.category is not None:
            category = self.category(requests["query_category"])[request_row]
            shows += ((exposed & (category >= 0)) * IN_CATEGORY_CROWD).astype(np.uint8)
        return Events(
            request_user=user,
            request_time=request_time,
            user=user_of,
            query=query,
            category=category,
            time=request_time[request_row],
            shows=shows,
        )


@dataclass
class HistoryState:
    """The events before a chunk of a log that a later request's history can still show, with
    what each impression shows in one (``shown``: name -> one value per impression event)."""

    events: Events
    shown: dict[str, np.ndarray]

    @classmethod
    def start(cls, keys: HistoryKeys) -> HistoryState:
        """The state before a log's first chunk: no events."""
        key, time, shows = (np.zeros(0, dtype=t) for t in (np.int32, np.int64, np.uint8))
        category = None if keys.category is None else key
        return cls(Events(key, time, key, key, category, time, shows), {})

    def then(
        self, events: Events, shown: dict[str, np.ndarray]
    ) -> tuple[Events, dict[str, np.ndarray]]:  # fmt: skip
        """This state's events followed by the next chunk's ``events``, and what each of the
        impression events shows (``shown``: the chunk's), leaving out the chunk's impressions
        that are in no history (unexposed, or exposed and unclicked with no query or category
        key). This state and ``events`` are spent, one array at a time (:meth:`Events.keep`):
        the state is not held whole beside the joined events."""
        in_some = events.shows > 0
        events = self.events.then(events.keep(np.ones(events.request_user.size, bool), in_some))
        joined = {}
        for name in list(shown):
            later = shown.pop(name)[in_some]
            earlier = self.shown.pop(name, None)
            joined[name] = later if earlier is None else np.concatenate([earlier, later])
            del earlier, later
        return events, joined

    @classmethod
    def of(
        cls, events: Events, shown: dict[str, np.ndarray], requests: np.ndarray,
        shows: np.ndarray,
    ) -> HistoryState:  # fmt: skip
        """The state of the request events the mask ``requests`` keeps and of the impression
        events still in some history, ``shows`` saying in which (:meth:`HistoryIndex.kept`),
        with what ``shown`` holds of each kept impression. ``events`` and ``shown`` are spent,
        one array at a time (:meth:`Events.keep`)."""
        impressions = shows > 0
        events.shows = shows
        kept = {name: shown.pop(name)[impressions] for name in list(shown)}
        return cls(events.keep(requests, impressions), kept)


class HistoryIndex:
    """Events (of a log, or of a chunk of it after a :class:`HistoryState`), indexed for every
    history of requests keyed by ``keys``.

    With ``asking``, the requests of a chunk, only their histories are asked for: each history
    indexes only the events of those requests' users, queries and categories (a chunk's
    requests see a small part of the state, which grows with the users and queries), and
    :meth:`kept` carries the other events over as they were: no event of theirs came."""

    def __init__(self, keys: HistoryKeys, events: Events, asking: pa.Table | None = None):
        self.user, self.query, self.category = keys.user, keys.query, keys.category
        self.events = events
        users = queries = categories = None
        if asking is not None:
            users = _among(keys.user, asking["user_id"])
            queries = _among(keys.query, normalised_query(asking["query"]))
            if keys.category is not None and "query_category" in asking.column_names:
                categories = _among(keys.category, asking["query_category"])
        shows = events.shows
        self.requests = EventIndex(_indexed(events.request_user, users), events.request_time)
        self.clicks = EventIndex(_indexed(events.user, users, shows & IN_CLICKS), events.time)
        self.query_crowd = EventIndex(
            _indexed(events.query, queries, shows & IN_QUERY_CROWD), events.time
        )
        if events.category is not None:
            self.category_crowd = EventIndex(
                _indexed(events.category, categories, shows & IN_CATEGORY_CROWD), events.time
            )

    @classmethod
    def of_log(cls, requests: pa.Table, impressions: pa.Table) -> HistoryIndex:
        """The index of a log (tables in the search-log schema), keyed by its own requests."""
        found = pc.index_in(impressions["request_id"], value_set=requests["request_id"])
        if found.null_count:
            raise ValueError(
                f"{count(found.null_count, 'impression')} name requests not in the requests table"
            )
        request_row = found.to_numpy(zero_copy_only=False).astype(np.int64)
        keys = HistoryKeys(requests)
        return cls(keys, keys.events(requests, request_row, impressions["click"]))

    def remaining(
        self, shown: dict[str, np.ndarray], user_length: int, click_length: int,
        crowd_length: int, crowd_days: float | None = None,
    ) -> HistoryState:  # fmt: skip
        """The :class:`HistoryState` after these events, for requests later than all of them:
        the events :meth:`kept` selects, and what ``shown`` holds of each kept impression.
        The index's events and ``shown`` are spent (:meth:`HistoryState.of`)."""
        kept = self.kept(user_length, click_length, crowd_length, crowd_days)
        return HistoryState.of(self.events, shown, *kept)

    def kept(
        self, user_length: int, click_length: int, crowd_length: int,
        crowd_days: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Which request events a request later than all of them can still see, and in which
        histories each impression event can still show (``Events.shows``; 0: none, not
        kept): each user's last ``user_length`` requests and ``click_length`` clicks, each
        query's and category's last ``crowd_length`` exposed impressions (a crowd's time
        window keeps a suffix of those, so they suffice). With ``crowd_days``, an impression
        stays in a crowd only while a later request's window can still hold it: not when it
        is older than the latest request by more than the window. An event the index left
        out (of a key no asking request has) stays where it was, but for the window."""
        shows = self.events.shows
        kept = self.clicks.recent(click_length, (shows & IN_CLICKS) > 0).astype(np.uint8)
        window = None
        if crowd_days is not None and self.events.request_time.size:
            latest = int(self.events.request_time.max())
            window = self.events.time >= latest - round(crowd_days * DAY_MS)
        crowds = [(self.query_crowd, IN_QUERY_CROWD)]
        if self.events.category is not None:
            crowds.append((self.category_crowd, IN_CATEGORY_CROWD))
        for index, bit in crowds:
            crowd = index.recent(crowd_length, (shows & bit) > 0)
            if window is not None:
                crowd &= window
            kept[crowd] |= bit
        return self.requests.recent(user_length, self.events.request_user >= 0), kept

    def histories(
        self,
        requests: pa.Table,
        user_length: int = 20,
        click_length: int = 50,
        crowd_length: int = 50,
        crowd_days: float | None = None,
        crowd_min_events: int = 1,
    ) -> Histories:
        """The histories of ``requests`` (user_id, query, timestamp, optional query_category),
        which need not be in the indexed log: an unseen user or query has none. The crowds
        hold events of the last ``crowd_days`` days only (all earlier ones without it); the
        query's crowd is used when it holds at least ``crowd_min_events`` events, else the
        category's when that does, else none."""
        if not 1 <= crowd_min_events <= crowd_length:
            raise ValueError(f"crowd_min_events {crowd_min_events}: expected 1..crowd_length "
                             f"({crowd_length})")  # fmt: skip
        if crowd_days is not None and crowd_days <= 0:
            raise ValueError(f"crowd_days {crowd_days}: expected a positive number of days")
        time = _times(requests["timestamp"])
        since = None if crowd_days is None else time - round(crowd_days * DAY_MS)
        user = self.user(requests["user_id"])
        query_key = self.query(normalised_query(requests["query"]))
        query = self.query_crowd.last_before(query_key, time, crowd_length, since)
        category = None
        if self.category is not None and "query_category" in requests.column_names:
            key = self.category(requests["query_category"])
            category = self.category_crowd.last_before(key, time, crowd_length, since)
        level = np.where((query >= 0).sum(1) >= crowd_min_events, CROWD_QUERY, CROWD_NONE)
        crowd = np.where(level[:, None] == CROWD_QUERY, query, -1)
        if category is not None:
            backed_off = (level == CROWD_NONE) & ((category >= 0).sum(1) >= crowd_min_events)
            level[backed_off] = CROWD_CATEGORY
            crowd[backed_off] = category[backed_off]
        return Histories(
            user_requests=self.requests.last_before(user, time, user_length),
            user_clicks=self.clicks.last_before(user, time, click_length),
            query_crowd=query,
            category_crowd=category,
            crowd=crowd,
            crowd_level=level.astype(np.int8),
        )
