"""Speakers: who speaks each segment, one id per voice across the project's videos.

- ``encoder``: the GE2E speaker encoder (resemblyzer) and where its weights come from
- ``cluster``: clustering within a video (voices + ASD face tracks), linking across videos
- ``stage``:   the ``speakers`` pipeline stage
- ``table``:   queries and the app's corrections (rename, merge, split off, move)

Reading a segment's speaker (exports, reports, your own scripts)::

    SELECT s.speaker_id, sp.name AS speaker_name
    FROM segments s LEFT JOIN speakers sp ON sp.id = s.speaker_id
    WHERE s.id = ?

(``table.SEGMENT_SPEAKER_SQL``; both are NULL until the speakers stage ran). A filter on
speaker is ``s.speaker_id IN (...)`` or ``sp.name = ?``.
"""
from .table import (SEGMENT_SPEAKER_SQL, SpeakerEditError, list_speakers, merge_speakers, move_segments,
                    rename_speaker, segment_speaker, split_segments)

__all__ = ["SEGMENT_SPEAKER_SQL", "SpeakerEditError", "list_speakers", "merge_speakers", "move_segments",
           "rename_speaker", "segment_speaker", "split_segments"]
