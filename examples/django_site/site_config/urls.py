from django.urls import path
from notes import views

urlpatterns = [
    path("notes/", views.add_note),
    path("notes/<int:owner>/", views.list_notes),
    path("stats/", views.pool_stats),
]
