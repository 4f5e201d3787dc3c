"""Overview page: figures, trend, breakdowns, heatmap, offline map; supervisors' download."""

from __future__ import annotations

import json
from dataclasses import asdict
from urllib.parse import quote

import pandas as pd
import plotly.express as px
import pydeck as pdk
import streamlit as st

from schemewatch import store, triage
from schemewatch.dashboard import auth, data, widgets
from schemewatch.dashboard.formatting import escape_chart_label
from schemewatch.geography import india_outline_geojson

WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


REFRESH_SECONDS = 5
# An empty map style inlined as a data: URL. With map_style=None Streamlit substitutes a Carto
# basemap from the internet; pydeck refuses a dict style unless the provider is Mapbox.


OFFLINE_MAP_STYLE = "data:application/json," + quote(
    json.dumps({"version": 8, "sources": {}, "layers": []})
)


def overview() -> None:
    settings, user, filters, version = widgets.context()
    st.title("Overview")
    if version is None:
        st.info("No model has been trained yet, so there are no alerts. Run `python train.py`.")
    live = st.toggle("Refresh live", value=True, key="live_refresh")
    _overview_body(live)
    if user.can("download"):
        _download(settings, user, filters, version)


@st.fragment(run_every=REFRESH_SECONDS)
def _overview_live() -> None:
    auth.check_still_signed_in(st.session_state["settings"])
    _overview_charts()


def _overview_body(live: bool) -> None:
    if live:
        _overview_live()
    else:
        _overview_charts()


def _overview_charts() -> None:
    settings, _, filters, version = widgets.context()
    figures = data.kpis(settings.db_path, filters, version)
    cards = st.columns(5)
    rate = figures["alerts"] / figures["scored"] if figures["scored"] else 0.0
    cards[0].metric("Transactions", f"{figures['transactions']:,}")
    cards[1].metric("Alerts", f"{figures['alerts']:,}")
    cards[2].metric("Alert rate", f"{rate:.2%}")
    cards[3].metric("Amount at risk", widgets.rupees(figures["amount_at_risk"]))
    cards[4].metric("Open cases", f"{figures['open_cases']:,}")
    if figures["transactions"] == 0:
        st.info("No transactions match the filters.")
        return
    st.plotly_chart(_trend(data.daily(settings.db_path, filters, version)), width="stretch")
    left, right = st.columns(2)
    by_scheme = _chart_labels(data.alerts_by(settings.db_path, filters, version, "scheme"))
    left.plotly_chart(
        px.bar(by_scheme, x="scheme", y="alerts", title="Alerts by scheme"),
        width="stretch",
    )
    by_state = _chart_labels(data.alerts_by(settings.db_path, filters, version, "state").head(15))
    states = px.bar(
        by_state, x="alerts", y="state", orientation="h", title="Alerts by state (top 15)"
    )
    states.update_yaxes(categoryorder="total ascending")
    right.plotly_chart(states, width="stretch")
    _heatmap(data.hour_weekday(settings.db_path, filters, version))
    _map(data.alerts(settings.db_path, filters, version, 5000))


def _chart_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Category labels from the data, made inert for Plotly (it renders <a href> in text)."""
    return frame.assign(**{frame.columns[0]: frame.iloc[:, 0].map(escape_chart_label)})


def _trend(daily: pd.DataFrame):
    """Transactions as bars, alerts as a line on their own axis (they are 100x fewer)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.add_bar(
        x=daily["day"], y=daily["transactions"], name="transactions", marker_color="#9ab8d8"
    )
    figure.add_scatter(
        x=daily["day"],
        y=daily["alerts"],
        name="alerts",
        yaxis="y2",
        line={"color": "#c0392b", "width": 2},
    )
    figure.update_layout(
        title="Daily transactions and alerts",
        yaxis={"title": "transactions"},
        yaxis2={"title": "alerts", "overlaying": "y", "side": "right", "rangemode": "tozero"},
        legend={"orientation": "h", "y": 1.1},
        bargap=0.1,
    )
    return figure


def _heatmap(cells: pd.DataFrame) -> None:
    grid = pd.DataFrame(0, index=list(WEEKDAYS), columns=list(range(24)))
    for weekday, hour, alerts in cells.itertuples(index=False):
        grid.iloc[int(weekday), int(hour)] = alerts
    figure = px.imshow(
        grid,
        labels={"x": "hour of day (IST)", "y": "weekday", "color": "alerts"},
        title="Alerts by hour and weekday",
        aspect="auto",
        color_continuous_scale="Reds",
    )
    st.plotly_chart(figure, width="stretch")


def _map(points: pd.DataFrame) -> None:
    """Alerts on India's outline; no tile server, no internet."""
    layers = [
        pdk.Layer(
            "GeoJsonLayer",
            india_outline_geojson(),
            stroked=True,
            filled=True,
            get_fill_color=[240, 240, 235],
            get_line_color=[90, 90, 90],
            line_width_min_pixels=1,
        )
    ]
    if len(points):
        points = points[["latitude", "longitude", "score", "transaction_id"]].copy()
        layers += [
            pdk.Layer("HeatmapLayer", points, get_position="[longitude, latitude]", opacity=0.4),
            pdk.Layer(
                "ScatterplotLayer",
                points,
                get_position="[longitude, latitude]",
                get_radius=6000,
                get_fill_color=[200, 30, 30, 180],
                pickable=True,
            ),
        ]
    st.subheader("Where alerts were paid out")
    st.pydeck_chart(
        pdk.Deck(
            layers=layers,
            initial_view_state=pdk.ViewState(latitude=22.5, longitude=80.0, zoom=3.6),
            map_provider=None,
            # An empty inline style: with map_style=None Streamlit fills in a Carto basemap URL.
            map_style=OFFLINE_MAP_STYLE,
            tooltip={"text": "transaction {transaction_id}\nscore {score}"},
        )
    )


def _download(settings, user, filters, version) -> None:
    def build() -> bytes:
        # Built when clicked, perhaps long after the page was drawn: check the account as it is now.
        auth.require_current(settings, user, "download")
        payload, rows = data.csv_download(settings.db_path, filters, version)
        conn = store.open_database(settings.db_path)
        try:
            triage.record_download(conn, user.username, asdict(filters), rows)
        finally:
            conn.close()
        return payload

    st.download_button(
        "Download the filtered transactions (CSV)",
        data=build,
        file_name="schemewatch-transactions.csv",
        mime="text/csv",
        key="download_csv",
    )


overview()
