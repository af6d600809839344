"""anime studio: ``python app.py`` serves the app on http://127.0.0.1:7860 (see README)."""
from animegan.ui import launch

if __name__ == "__main__":
    launch()
