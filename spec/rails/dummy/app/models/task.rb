# frozen_string_literal: true

class Task < ApplicationRecord
  belongs_to :tenant
  belongs_to :project
  belongs_to :assignee, class_name: "User", optional: true
  belongs_to :parent, class_name: "Task", optional: true
  has_many :subtasks, class_name: "Task", foreign_key: :parent_id, dependent: :destroy
  # No tenant column and a foreign key name no convention explains: found
  # only through this reflection.
  has_many :checklist_items, foreign_key: :todo_id, dependent: :delete_all
  has_and_belongs_to_many :tags
  has_many :comments, as: :commentable, dependent: :destroy
  has_many_attached :files
end
