"""What the annotator said about one segment, and what this rater answered."""
from __future__ import annotations

import html

from PySide6.QtWidgets import QLabel, QTextBrowser, QVBoxLayout, QWidget
from PySide6.QtCore import Qt

from mikupal.review import ReviewItem
from mikupal.taxonomy import TaxonomyError, load_label_set

_VERDICT_COLORS = {"accept": "#4caf50", "reject": "#e53935", "skip": "#9e9e9e"}


def _color_of(label_set: str, name: str) -> str:
    try:
        ls = load_label_set(label_set)
        canon = ls.canonical(name)
        return ls.colors.get(canon, "#c0c0c0") if canon else "#c0c0c0"
    except TaxonomyError:
        return "#c0c0c0"


class LabelPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.header = QLabel()
        self.header.setTextFormat(Qt.RichText)
        self.header.setWordWrap(True)
        self.verdict = QLabel()
        self.verdict.setTextFormat(Qt.RichText)
        self.body = QTextBrowser()
        self.body.setFocusPolicy(Qt.NoFocus)
        self.body.setOpenLinks(False)
        lay.addWidget(self.header)
        lay.addWidget(self.verdict)
        lay.addWidget(self.body, 1)

    def show_item(self, item: ReviewItem | None) -> None:
        if item is None:
            self.header.setText("<i>Nothing to review in this queue.</i>")
            self.verdict.clear()
            self.body.clear()
            return
        a, s = item.annotation, item.segment
        e = html.escape
        if a:
            col = _color_of(a["label_set"], a["primary_emotion"])
            inten = a["intensities"].get(a["primary_emotion"])
            inten_s = f" {float(inten):.2f}" if isinstance(inten, (int, float)) else ""
            self.header.setText(
                f"<span style='background:{col};color:#111;padding:2px 6px;font-weight:bold;font-size:15pt'>"
                f"&nbsp;{e(a['primary_emotion'])}{inten_s}&nbsp;</span>"
                f"<br><span style='color:#aaa;font-size:9pt'>{e(a['backend'])} · {e(a['model'])} · prompt "
                f"{e(str(a['prompt_sha'])[:10])} · run {a['run_index']} of {max(1, len(item.runs))} · {e(a['label_set'])}</span>")
        else:
            self.header.setText("<i>No emotion annotation for this segment yet (run the emotion stage).</i>")
        self.verdict.setText(self._verdict_html(item))
        rows = [("Transcript", s.get("text") or "")]
        if a:
            rows += [("Rationale", a.get("rationale")), ("Visual", a.get("visual_analysis")),
                     ("Audio", a.get("audio_analysis")), ("Text", a.get("text_analysis"))]
        seg_info = (f"{s['start_s']:.2f}–{s['end_s']:.2f} s · segment {s['id']} · "
                    f"{e(str(item.video.get('path', '')).rsplit('/', 1)[-1])}")
        if s.get("asd_score") is not None:
            seg_info += f" · ASD {s['asd_score']:.2f}"
        parts = [f"<p style='color:#888'>{seg_info}</p>"]
        for title, text in rows:
            parts.append(f"<p><b style='color:#ffc857'>{title}</b><br>{e(text or '—')}</p>")
        self.body.setHtml("".join(parts))

    @staticmethod
    def _verdict_html(item: ReviewItem) -> str:
        v = item.verdict
        if v:
            col = _VERDICT_COLORS.get(v["verdict"], "#aaa")
            s = f"Your verdict: <b style='color:{col}'>{v['verdict'].upper()}</b>"
            if v.get("corrected_label"):
                s += f" → corrected to <b>{html.escape(v['corrected_label'])}</b>"
        else:
            s = "Your verdict: <i>not reviewed</i>"
        if item.others:
            s += "&nbsp;&nbsp;<span style='color:#aaa'>others: " + ", ".join(
                f"{n} {k}" for k, n in sorted(item.others.items())) + "</span>"
        return s
