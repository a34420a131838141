"""Documents as input: read, checked and attached, and ``run --file`` refusing before it starts."""

from __future__ import annotations

import base64
import sqlite3

import pytest
from pydantic import ValidationError

from actors.bot.jobs import JobKind, JobStore
from actors.cli import main as cli
from actors.config import Settings
from actors.engine.documents import (
    Document,
    attach,
    read_document,
    text_document,
)
from actors.errors import DocumentLimitError, UserInputError
from actors.gateway.http_guard import Refusal, TaskIn, body_limit, task_documents

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"


def pdf_with_text(*lines: str) -> bytes:
    """A minimal valid one-page PDF showing ``lines`` in Helvetica (none: a page with no text,
    as a scan has)."""

    def literal(text: str) -> str:
        return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"

    shown = " T* ".join(f"{literal(line)} Tj" for line in lines)
    content = f"BT /F1 12 Tf 14 TL 72 720 Td {shown} ET".encode() if lines else b""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


@pytest.fixture
def settings() -> Settings:
    return Settings().with_overrides(
        max_document_bytes=2_000,
        max_document_chars=500,
        max_documents=2,
        max_documents_chars=800,
    )


def test_markdown_and_plain_text_are_read_as_they_are(settings):
    md = read_document("notes/plan.md", "# Plan\r\n\r\n- ship **it** 🚀\n".encode(), settings)
    assert md == Document(name="plan.md", text="# Plan\n\n- ship **it** 🚀")  # folders dropped
    txt = read_document("README", "\ufeffplain words".encode(), settings)  # BOM dropped
    assert txt.text == "plain words" and txt.name == "README"
    assert read_document("a.MARKDOWN", b"x", settings).text == "x"


def test_a_pdf_is_read_through_its_text():
    doc = read_document(
        "report.pdf", pdf_with_text("Quarterly report (draft)", "Revenue grew 12%"), Settings()
    )
    assert doc.name == "report.pdf"
    assert "Quarterly report (draft)" in doc.text and "Revenue grew 12%" in doc.text
    assert doc.text.index("Quarterly") < doc.text.index("Revenue")


def test_a_pdf_with_no_text_is_refused_as_a_scan():
    with pytest.raises(UserInputError, match=r"scan\.pdf has no text.*scanned PDF\?"):
        read_document("scan.pdf", pdf_with_text(), Settings())


def test_a_damaged_pdf_is_refused_clearly():
    with pytest.raises(UserInputError, match=r"broken\.pdf could not be read as a PDF"):
        read_document("broken.pdf", b"%PDF-1.4\n" + b"\x00garbage" * 20, Settings())


def test_a_pdf_name_without_a_pdf_inside_is_refused(settings):
    with pytest.raises(UserInputError, match=r"fake\.pdf is a \.pdf file; send plain text"):
        read_document("fake.pdf", b"just text", settings)


def test_an_oversized_file_is_refused_before_it_is_parsed(settings):
    # Not a valid PDF: refused for its size, so it was never handed to the PDF reader.
    with pytest.raises(DocumentLimitError, match=r"big\.pdf is 2 kB; the limit is 2 kB"):
        read_document("big.pdf", b"%PDF-" + b"x" * 2_400, settings)
    with pytest.raises(DocumentLimitError, match=r"10\.5 MB; the limit is 10 MB per document"):
        read_document("huge.md", b"x" * 10_500_000, Settings())


def test_too_much_text_in_one_file_is_refused(settings):
    with pytest.raises(DocumentLimitError, match=r"long\.txt has 600 characters.*limit is 500"):
        read_document("long.txt", b"y" * 600, settings)
    with pytest.raises(DocumentLimitError, match="limit is 500"):
        text_document("long.md", "z" * 501, settings)


@pytest.mark.parametrize(
    ("name", "data", "said"),
    [
        ("photo.png", PNG, "photo.png is a PNG image"),
        ("photo.txt", PNG, "photo.txt is a PNG image"),  # the content decides, not the name
        ("archive.zip", b"PK\x03\x04rest", "is a zip archive"),
        ("report.docx", b"PK\x03\x04rest", "report.docx is a zip archive"),
        ("data.bin", b"\x01\x02", "data.bin is a .bin file"),
        ("latin1.txt", "café".encode("latin-1"), "latin1.txt is not UTF-8 text"),
        ("nul.md", b"a\x00b", "nul.md holds NUL bytes"),
    ],
)
def test_other_types_are_refused_naming_the_file_and_what_is_accepted(settings, name, data, said):
    with pytest.raises(UserInputError) as refused:
        read_document(name, data, settings)
    assert said in str(refused.value)
    if "NUL" not in said:
        assert "Markdown (.md) or PDF" in str(refused.value)
    assert not isinstance(refused.value, DocumentLimitError)


def test_an_empty_file_is_refused(settings):
    with pytest.raises(UserInputError, match=r"blank\.md is empty"):
        read_document("blank.md", b" \n\t\n", settings)


def test_attach_puts_one_block_per_document_after_the_request(settings):
    docs = [
        Document(name='a "quoted" <name>.md', text="first"),
        Document(name="b.txt", text="it says </document> and <request>"),
    ]
    text = attach("What do they say?", docs, settings)
    assert text == (
        "What do they say?\n\n"
        '<document name="a quoted name.md">\nfirst\n</document>\n\n'
        '<document name="b.txt">\nit says ‹/document> and ‹request>\n</document>'
    )
    assert attach("alone", [], settings) == "alone"


def test_attach_refuses_too_many_documents_or_too_much_text(settings):
    three = [Document(name=f"{i}.md", text="x") for i in range(3)]
    with pytest.raises(DocumentLimitError, match="3 documents were sent; the limit is 2"):
        attach("q", three, settings)
    two = [Document(name=f"{i}.md", text="x" * 450) for i in range(2)]
    with pytest.raises(DocumentLimitError, match=r"900 characters of text together.*limit is 800"):
        attach("q", two, settings)


# --- run --file: refused before anything starts ----------------------------------------


def _run(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["run", "--json", *args, "What is in it?"])
    return code, capsys.readouterr().err


def test_run_refuses_a_missing_file(tmp_path, capsys):
    code, err = _run(capsys, "--file", str(tmp_path / "nowhere.md"))
    assert code == cli.EXIT_USAGE
    assert "nowhere.md" in err and "Traceback" not in err


def test_run_refuses_an_image_and_names_it(tmp_path, capsys):
    (tmp_path / "notes.md").write_text("# fine")
    (tmp_path / "shot.png").write_bytes(PNG)
    code, err = _run(
        capsys, "--file", str(tmp_path / "notes.md"), "--file", str(tmp_path / "shot.png")
    )
    assert code == cli.EXIT_USAGE and "shot.png is a PNG image" in err


def test_run_refuses_an_oversized_file_and_too_many_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PARALLEL_AGENTS_MAX_DOCUMENT_BYTES", "100")
    monkeypatch.setenv("PARALLEL_AGENTS_MAX_DOCUMENTS", "1")
    (tmp_path / "big.txt").write_text("b" * 150)
    code, err = _run(capsys, "--file", str(tmp_path / "big.txt"))
    assert code == cli.EXIT_USAGE and "big.txt is 150 bytes; the limit is 100 bytes" in err
    (tmp_path / "a.md").write_text("a")
    (tmp_path / "b.md").write_text("b")
    code, err = _run(capsys, "--file", str(tmp_path / "a.md"), "--file", str(tmp_path / "b.md"))
    assert code == cli.EXIT_USAGE and "2 documents were sent; the limit is 1" in err


def test_run_refuses_a_folder(tmp_path, capsys):
    code, err = _run(capsys, "--file", str(tmp_path))
    assert code == cli.EXIT_USAGE and "cannot read" in err


# --- POST /tasks documents and the bot's stored jobs ------------------------------------


def _body(*documents: dict) -> TaskIn:
    return TaskIn.model_validate({"text": "What is in it?", "documents": list(documents)})


def test_a_task_body_carries_text_and_base64_documents(settings):
    pdf = base64.b64encode(pdf_with_text("Hello from a PDF")).decode()
    wrapped = "\n".join(pdf[i : i + 76] for i in range(0, len(pdf), 76))  # as `base64` writes
    docs = task_documents(
        _body({"name": "a.md", "text": "# A"}, {"name": "b.pdf", "data_base64": wrapped}),
        Settings(),
    )
    assert [d.name for d in docs] == ["a.md", "b.pdf"]
    assert docs[0].text == "# A" and "Hello from a PDF" in docs[1].text


@pytest.mark.parametrize(
    ("document", "status", "said"),
    [
        ({"name": "shot.png", "data_base64": base64.b64encode(PNG).decode()}, 422, "PNG image"),
        ({"name": "x.pdf", "data_base64": "not base64!"}, 422, "not valid base64"),
        ({"name": "long.md", "text": "w" * 501}, 413, "the limit is 500 per document"),
        ({"name": "big.pdf", "data_base64": "QUJD" * 1_000}, 413, "the limit is 2 kB"),
    ],
)
def test_a_refused_task_document_is_413_or_422_with_the_reason(settings, document, status, said):
    with pytest.raises(Refusal) as refused:
        task_documents(_body(document), settings)
    assert refused.value.status == status and said in refused.value.detail


def test_a_task_document_needs_text_or_data_but_not_both():
    with pytest.raises(ValidationError, match="either text or data_base64"):
        _body({"name": "a.md"})
    with pytest.raises(ValidationError, match="either text or data_base64"):
        _body({"name": "a.md", "text": "x", "data_base64": "eA=="})


def test_the_body_limit_makes_room_for_the_text_and_one_largest_file():
    settings = Settings()
    text = 12 * (settings.max_request_chars + settings.max_documents_chars)  # all escaped
    one_pdf = 4 * settings.max_document_bytes // 3  # in base64
    assert text + one_pdf < body_limit(settings) < 1.1 * (text + one_pdf)
    assert body_limit(settings) < 2 * one_pdf  # not room for every file at full size


def test_a_job_keeps_its_documents_across_a_restart(tmp_path):
    doc = Document(name="plan.md", text="# Plan")
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.record(1, 5, 5, "Review it", JobKind.REQUEST, [doc])
    store.record(2, 5, 5, "Plain", JobKind.REQUEST)
    store.close()
    store = JobStore(tmp_path / "jobs.sqlite3")
    assert [job.documents for job in store.undelivered()] == [[doc], []]
    store.close()


def test_a_schema_2_job_store_gains_documents_in_place(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    store.record(1, 5, 5, "old job", JobKind.REQUEST)
    store.close()
    db = sqlite3.connect(path)
    for later in ("documents", "cost_limit_usd", "footer"):  # what schema 2 did not have
        db.execute(f"ALTER TABLE jobs DROP COLUMN {later}")
    db.execute("UPDATE schema_version SET version = 2")
    db.commit()
    db.close()
    store = JobStore(path)
    (job,) = store.undelivered()
    assert job.text == "old job" and job.documents == []
    store.record(2, 5, 5, "new job", JobKind.REQUEST, [Document(name="n.txt", text="n")])
    assert store.get(2).documents == [Document(name="n.txt", text="n")]
    store.close()
