"""`task:` what the model must do, and which record fields feed it. Chosen by `type`."""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from .base import Section

Name = Annotated[str, StringConstraints(min_length=1)]  # a record field name
FieldNames = Annotated[list[Name], Field(min_length=1)]


def _as_list(value):
    return [value] if isinstance(value, str) else value


def _unique(labels):
    if labels is not None:
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"labels must be distinct; given more than once: {', '.join(twice)}")
    return labels


class ClassifyTask(Section):
    type: Literal["classify"] = "classify"
    text: FieldNames = Field(["text"], description="Field(s) joined into the input text.")
    label: str = Field("label", description="Field holding the label (a list of labels when multi_label).")
    labels: list[str] | None = Field(None, description="Label set in order; default: sorted labels of train.")
    multi_label: bool = Field(False, description="Each example may carry several labels.")
    id: str | None = Field(None, description="Field copied into predictions (e.g. for a submission CSV).")
    separator: str = Field("\n", description="Joins several text fields.")

    _list = field_validator("text", mode="before")(_as_list)
    _distinct = field_validator("labels")(_unique)


class PairTask(Section):
    type: Literal["pair"] = "pair"
    text_a: str = Field("text_a")
    text_b: str = Field("text_b")
    label: str = Field("label")
    labels: list[str] | None = None
    id: str | None = None

    _distinct = field_validator("labels")(_unique)


class TagTask(Section):
    type: Literal["tag"] = "tag"
    tokens: str = Field("tokens", description="Field with the list of words.")
    tags: str = Field("tags", description="Field with one BIO tag per word.")
    labels: list[str] | None = Field(None, description="Tag set; default: from train.")
    id: str | None = None

    _distinct = field_validator("labels")(_unique)


class KeywordsTask(Section):
    """Keyword extraction as BIO tagging of keyword mentions in the text, decoded back to a keyword list."""

    type: Literal["keywords"] = "keywords"
    text: FieldNames = Field(["title", "abstract"], description="Field(s) the keywords are found in.")
    keywords: str = Field("keywords", description="Field with the list of gold keywords.")
    id: str | None = None

    _list = field_validator("text", mode="before")(_as_list)


class SpanTask(Section):
    type: Literal["span"] = "span"
    context: str = Field("context")
    question: str = Field("question")
    answer: str = Field(
        "answer", description="Field with {text, start} (start: character offset in context)."
    )
    id: str | None = None


class SftTask(Section):
    """Instruction tuning: Alpaca records or `messages` conversations; loss on assistant tokens only."""

    type: Literal["sft"] = "sft"
    format: Literal["auto", "alpaca", "messages"] = Field(
        "auto", description="Record shape; auto detects it."
    )
    template: Literal["auto", "model", "alpaca", "plain"] = Field(
        "auto", description="auto: the model's chat template if it has one, else alpaca."
    )
    system: str | None = Field(None, description="System prompt added to every example without one.")


class GenerateTask(Section):
    """A task answered by generating text: instruction + fields in, text out, scored by `metric`."""

    type: Literal["generate"] = "generate"
    instruction: str = Field(description="Instruction put before the input fields.")
    text: FieldNames = Field(["text"], description="Input field(s).")
    target: str = Field("label", description="Field with the expected output.")
    metric: Literal["label_f1", "keyword_f1", "rouge_l"] = Field("rouge_l")
    labels: list[str] | None = Field(
        None, description="For label_f1: the valid outputs; the first is the positive class of `f1`."
    )
    label_map: dict[str, str] | None = Field(
        None, description="For label_f1: gold value -> output text, e.g. {Humans: '1', Animals: '0'}."
    )
    template: Literal["auto", "model", "alpaca", "plain"] = "auto"
    system: str | None = Field(None, description="System prompt added to every example.")
    max_new_tokens: int = Field(64, ge=1, description="Generation length when evaluating.")
    id: str | None = None

    _list = field_validator("text", mode="before")(_as_list)
    _distinct = field_validator("labels")(_unique)

    @model_validator(mode="after")
    def _outputs_are_labels(self):
        if self.label_map and self.labels:
            stray = [v for v in dict.fromkeys(self.label_map.values()) if v not in self.labels]
            if stray:
                raise ValueError(
                    f"label_map maps to {', '.join(map(repr, stray))}, which task.labels does not list "
                    f"({', '.join(self.labels)})"
                )
        return self


TaskConfig = Annotated[
    ClassifyTask | PairTask | TagTask | KeywordsTask | SpanTask | SftTask | GenerateTask,
    Field(discriminator="type"),
]
