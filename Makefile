# The README's two commands: `make app` and `make test`. Both set up .venv first (once; again
# when requirements.txt changes). pip, not uv/poetry: torch comes from this machine kind's
# local wheel disk, which only pip reads.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: app test bench

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

app: $(VENV)/.installed
	$(PY) -m streamlit run app.py

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(VENV)/.installed
	$(PY) -m fusion bench predict --json
