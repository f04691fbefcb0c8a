from django.urls import path

from realtime import api, views

app_name = "realtime"
urlpatterns = [
    path("", views.home, name="home"),
    path("topics/<str:slug>/", views.topic_detail, name="topic"),
    path("console/", views.console, name="console"),
    path("api/v1/topics/<str:slug>/messages", api.publish_view, name="api-publish"),
]
