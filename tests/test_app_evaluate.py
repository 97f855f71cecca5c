"""The Evaluate page under AppTest: a version's scores beside zero-shot, the confusion matrix and
reliability diagram, the error list with Grad-CAM, the learning curve and a comparison."""
from __future__ import annotations

from fusion.ml import registry
from fusion.services import version_report
from fusion.store.labeling import open_store
from fusion.ml.train import TrainConfig, train_version

from conftest import ANNOTATOR
from helpers import started


def test_evaluate_page_shows_scores_errors_and_a_comparison(settings, demo_project, corrected):
    store = open_store(settings)
    strong, _ = train_version(settings, store, corrected.name, TrainConfig(epochs=10), user=ANNOTATOR)
    weak, _ = train_version(settings, store, corrected.name, TrainConfig(epochs=1, patience=1), user=ANNOTATOR)
    app = started(demo_project)
    app.selectbox(key="project").set_value(corrected.name).run()
    app.switch_page("pages/evaluate.py").run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Evaluate"
    app.selectbox(key="eval_version").set_value(weak).run()
    headline = app.dataframe[0].value
    version = registry.get_version(store, corrected.name, weak)
    assert list(headline["model"]) == [f"fused ({weak})", f"image ({weak})", f"text ({weak})",
                                      f"zero-shot fused (on {weak}'s test)"]
    assert headline["accuracy"].iloc[0] == version.score("fused", "accuracy")
    assert len(app.get("plotly_chart")) == 3          # confusion, reliability, learning curve

    wrong = version_report.errors(version_report.test_predictions(store, corrected, weak))
    if wrong:                                         # the error list and its Grad-CAM pictures
        errors_table = next(d.value for d in app.dataframe if "true" in d.value.columns)
        assert len(errors_table) == len(wrong) and set(errors_table["true"]) <= set(corrected.labels)
        app.toggle(key="eval_gradcam").set_value(True).run()
        assert not app.exception, app.exception
        assert len(app.get("imgs")) >= 1 or len(app.image) >= 1

    app.selectbox(key="eval_other").set_value(strong).run()
    assert not app.exception, app.exception
    assert any("test items whose prediction changed" in m.value for m in app.markdown)
